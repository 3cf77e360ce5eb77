// runc-capwrap drops, from an OCI spec, every capability that this process's
// capability bounding set lacks, then execs the real runc.
//
// Why: on this machine the bounding set lacks CAP_SYS_RESOURCE, so runc fails
// any privileged container ("unable to apply caps: operation not permitted").
// Registered as Docker's default runtime on the host, and as containerd's
// runc BinaryName inside the kind node, it makes `--privileged` containers
// and privileged pods work with every capability the machine can grant.
//
// Handled: `create`/`run` (the bundle's config.json, found via --bundle/-b or
// the working directory) and `exec` (the --process/-p JSON). Everything else
// passes through untouched. The real runc is $RUNC_CAPWRAP_REAL, else the
// first of /usr/sbin/runc, /usr/bin/runc, /usr/local/sbin/runc.real.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

var capNames = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
	"CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
	"CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
	"CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
	"CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
	"CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
	"CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE",
	"CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
	"CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
}

// missingCaps returns the names of known capabilities absent from CapBnd.
func missingCaps() map[string]bool {
	missing := map[string]bool{}
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return missing
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "CapBnd:") {
			continue
		}
		bnd, err := strconv.ParseUint(strings.TrimSpace(strings.TrimPrefix(line, "CapBnd:")), 16, 64)
		if err != nil {
			return missing
		}
		for i, name := range capNames {
			if bnd&(1<<uint(i)) == 0 {
				missing[name] = true
			}
		}
	}
	return missing
}

func filterCaps(caps map[string]interface{}, missing map[string]bool) {
	for _, set := range []string{"bounding", "effective", "inheritable", "permitted", "ambient"} {
		list, ok := caps[set].([]interface{})
		if !ok {
			continue
		}
		kept := make([]interface{}, 0, len(list))
		for _, c := range list {
			if s, ok := c.(string); ok && missing[s] {
				continue
			}
			kept = append(kept, c)
		}
		caps[set] = kept
	}
}

// rewrite filters capabilities in the JSON file at path. inProcess selects
// the layout: a runtime spec (process.capabilities) or a process JSON
// (capabilities at top level).
func rewrite(path string, inProcess bool, missing map[string]bool) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var doc map[string]interface{}
	if err := json.Unmarshal(data, &doc); err != nil {
		return err
	}
	proc := doc
	if !inProcess {
		p, ok := doc["process"].(map[string]interface{})
		if !ok {
			return nil
		}
		proc = p
	}
	caps, ok := proc["capabilities"].(map[string]interface{})
	if !ok {
		return nil
	}
	filterCaps(caps, missing)
	out, err := json.Marshal(doc)
	if err != nil {
		return err
	}
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	return os.WriteFile(path, out, st.Mode().Perm())
}

// Global runc flags that take a value (so their value is not the subcommand).
var globalWithValue = map[string]bool{"--root": true, "--log": true, "--log-format": true, "--criu": true, "--rootless": true}

func flagValue(args []string, names ...string) (string, bool) {
	for i, a := range args {
		for _, n := range names {
			if a == n && i+1 < len(args) {
				return args[i+1], true
			}
			if strings.HasPrefix(a, n+"=") {
				return strings.TrimPrefix(a, n+"="), true
			}
		}
	}
	return "", false
}

func realRunc() string {
	if p := os.Getenv("RUNC_CAPWRAP_REAL"); p != "" {
		return p
	}
	for _, p := range []string{"/usr/sbin/runc", "/usr/bin/runc", "/usr/local/sbin/runc.real"} {
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p
		}
	}
	return "runc"
}

func main() {
	args := os.Args[1:]
	sub, subIdx := "", -1
	for i := 0; i < len(args); i++ {
		a := args[i]
		if strings.HasPrefix(a, "-") {
			if globalWithValue[a] {
				i++
			}
			continue
		}
		sub, subIdx = a, i
		break
	}
	missing := missingCaps()
	if len(missing) > 0 && subIdx >= 0 {
		rest := args[subIdx+1:]
		var err error
		switch sub {
		case "create", "run":
			bundle, ok := flagValue(rest, "--bundle", "-b")
			if !ok {
				bundle, _ = os.Getwd()
			}
			err = rewrite(filepath.Join(bundle, "config.json"), false, missing)
		case "exec":
			if p, ok := flagValue(rest, "--process", "-p"); ok {
				err = rewrite(p, true, missing)
			}
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "runc-capwrap: %v\n", err)
		}
	}
	real := realRunc()
	if err := syscall.Exec(real, append([]string{real}, args...), os.Environ()); err != nil {
		fmt.Fprintf(os.Stderr, "runc-capwrap: exec %s: %v\n", real, err)
		os.Exit(127)
	}
}
