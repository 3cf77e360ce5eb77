// runc-capwrap drops, from an OCI spec, every capability that this process's
// capability bounding set lacks, then execs the real runc.
//
// Why: on this machine the bounding set lacks CAP_SYS_RESOURCE, so runc fails
// any privileged container ("unable to apply caps: operation not permitted").
// Registered as Docker's default runtime on the host, and as containerd's
// runc BinaryName inside the kind node, it makes `--privileged` containers
// and privileged pods work with every capability the machine can grant.
//
// Without CAP_SYS_RESOURCE a process can neither lower its oom_score_adj
// below its parent's nor raise a hard rlimit, and runc's init then dies
// ("can't get final child's PID from pipe"). So, when that capability is
// missing, the wrapper also clamps process.oomScoreAdj to at least this
// process's own value and every process.rlimits entry to this process's
// current hard limit.
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

var rlimitNumbers = map[string]int{
	"RLIMIT_CPU": 0, "RLIMIT_FSIZE": 1, "RLIMIT_DATA": 2, "RLIMIT_STACK": 3, "RLIMIT_CORE": 4,
	"RLIMIT_RSS": 5, "RLIMIT_NPROC": 6, "RLIMIT_NOFILE": 7, "RLIMIT_MEMLOCK": 8, "RLIMIT_AS": 9,
	"RLIMIT_LOCKS": 10, "RLIMIT_SIGPENDING": 11, "RLIMIT_MSGQUEUE": 12, "RLIMIT_NICE": 13,
	"RLIMIT_RTPRIO": 14, "RLIMIT_RTTIME": 15,
}

// clampResources keeps oomScoreAdj and rlimits within what a process without
// CAP_SYS_RESOURCE may set.
func clampResources(proc map[string]interface{}) {
	if raw, err := os.ReadFile("/proc/self/oom_score_adj"); err == nil {
		own, err := strconv.Atoi(strings.TrimSpace(string(raw)))
		if adj, ok := proc["oomScoreAdj"].(float64); ok && err == nil && int(adj) < own {
			proc["oomScoreAdj"] = own
		}
	}
	limits, ok := proc["rlimits"].([]interface{})
	if !ok {
		return
	}
	for _, l := range limits {
		lim, ok := l.(map[string]interface{})
		if !ok {
			continue
		}
		name, _ := lim["type"].(string)
		num, known := rlimitNumbers[name]
		if !known {
			continue
		}
		var cur syscall.Rlimit
		if err := syscall.Getrlimit(num, &cur); err != nil {
			continue
		}
		hard, _ := lim["hard"].(float64)
		soft, _ := lim["soft"].(float64)
		max := float64(cur.Max)
		if cur.Max == ^uint64(0) {
			continue // unlimited: anything goes
		}
		if hard > max {
			lim["hard"] = cur.Max
			hard = max
		}
		if soft > hard {
			lim["soft"] = uint64(hard)
		}
	}
}

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
	if caps, ok := proc["capabilities"].(map[string]interface{}); ok {
		filterCaps(caps, missing)
	}
	if missing["CAP_SYS_RESOURCE"] {
		clampResources(proc)
	}
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
