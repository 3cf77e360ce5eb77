"""Regenerate `synod.etcdapi._pb` from etcd's own .proto files.

Two steps, `python -m synod.etcdapi.genprotos fetch|generate`:

* ``fetch`` (network, `make etcdapi-protos`): download etcd's Go modules
  (``go.etcd.io/etcd/api/v3`` and ``.../server/v3`` at ``ETCD_VERSION``) from the Go
  module proxy, check their sha256, and write ``rpc.proto``, ``kv.proto``,
  ``auth.proto`` and ``v3lock.proto`` under
  ``_pb/`` with the Go-only annotations (gogoproto options, google.api.http routes)
  stripped and the imports rooted at ``synod/etcdapi/_pb``. Messages, fields, numbers
  and services are left exactly as etcd maintains them.
* ``generate`` (offline): run grpcio-tools' protoc on those files into ``_pb/``
  (``*_pb2.py``, ``*_pb2.pyi``, ``rpc_pb2_grpc.py``) with grpcio-tools 1.81.1, the
  newest that generates code for the protobuf 6 runtime the node pins.

Both outputs are committed: the node (and its container image) then needs only the
protobuf and grpcio runtimes, never protoc; ``tests/unit/test_etcdapi_protos.py``
regenerates into a temporary directory and fails if a byte differs, so the committed
code cannot drift from the committed .proto files or from the pinned grpcio-tools.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import re
import sys
import urllib.request
import zipfile
from pathlib import Path

__all__ = ["PROTO_FILES", "fetch", "generate", "strip_annotations"]

ETCD_VERSION = "v3.5.17"
# Go module -> sha256 of its zip at ETCD_VERSION on the proxy.
MODULES = {
    "go.etcd.io/etcd/api/v3": "d80cce415489199ec20ab23746bab24ec290014dcca023ea4719717650882394",
    "go.etcd.io/etcd/server/v3": "afb8d7f02075933d9d42204062266b6edf8715d0426f61883c1aa41ac3e4cba5",
}
GO_PROXY = "https://proxy.golang.org"
ZIP_BYTES_MAX = 16 * 1024 * 1024
PB_DIR = Path(__file__).resolve().parent / "_pb"
SOURCE_ROOT = PB_DIR.parents[2]  # node-image/: proto paths are synod/etcdapi/_pb/...
IMPORT_ROOT = "synod/etcdapi/_pb"
# (module, path in the module, path under _pb)
PROTO_FILES = (
    ("go.etcd.io/etcd/api/v3", "authpb/auth.proto", "authpb/auth.proto"),
    ("go.etcd.io/etcd/api/v3", "mvccpb/kv.proto", "mvccpb/kv.proto"),
    ("go.etcd.io/etcd/api/v3", "etcdserverpb/rpc.proto", "etcdserverpb/rpc.proto"),
    ("go.etcd.io/etcd/server/v3", "etcdserver/api/v3lock/v3lockpb/v3lock.proto",
     "v3lockpb/v3lock.proto"),
)  # fmt: skip
_GOGO_IMPORT = re.compile(r'^import "(gogoproto/gogo|google/api/annotations)\.proto";\n', re.M)
_GOGO_OPTION = re.compile(r"^option \(gogoproto\.[a-z_]+\) = [a-z]+;\n", re.M)
# The route body: fields, at most one level of nested blocks (additional_bindings).
_HTTP_OPTION = re.compile(r"\{\s*option \(google\.api\.http\) = \{(?:[^{}]|\{[^{}]*\})*\};\s*\}")
_ETCD_IMPORT = re.compile(r'^import "etcd/api/(\w+/\w+\.proto)";', re.M)


def strip_annotations(text: str) -> str:
    """etcd's .proto ``text`` without its Go-only annotations, imports re-rooted.

    Raises ValueError if an annotation is left (a new etcd version uses one more)."""
    text = _GOGO_IMPORT.sub("", text)
    text = _GOGO_OPTION.sub("", text)
    text = _HTTP_OPTION.sub("{}", text)
    text = _ETCD_IMPORT.sub(lambda m: f'import "{IMPORT_ROOT}/{m[1]}";', text)
    if "gogoproto" in text or "google.api" in text:
        raise ValueError("an annotation was not stripped; extend genprotos.strip_annotations")
    assert "etcd/api/" not in text
    return text


def _module_zip(module: str, sha256: str) -> bytes:
    """The zip of ``module`` at ETCD_VERSION. Raises OSError, ValueError (checksum)."""
    url = f"{GO_PROXY}/{module}/@v/{ETCD_VERSION}.zip"
    with urllib.request.urlopen(url, timeout=60) as answer:
        data = answer.read(ZIP_BYTES_MAX + 1)
    if len(data) > ZIP_BYTES_MAX:
        raise ValueError(f"{url} is larger than {ZIP_BYTES_MAX} bytes")
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise ValueError(f"{url}: sha256 {digest}, expected {sha256}")
    assert isinstance(data, bytes)
    return data


def fetch() -> None:
    """Download etcd's modules and write the stripped .proto files under _pb/.

    Raises OSError (network), ValueError (checksum mismatch, annotation left)."""
    for module, sha256 in MODULES.items():
        with zipfile.ZipFile(io.BytesIO(_module_zip(module, sha256))) as archive:
            for owner, source, target in PROTO_FILES:
                if owner != module:
                    continue
                text = archive.read(f"{module}@{ETCD_VERSION}/{source}").decode()
                out = PB_DIR / target
                out.parent.mkdir(parents=True, exist_ok=True)
                header = f"// From {module}@{ETCD_VERSION}/{source} by genprotos.py.\n"
                out.write_text(header + strip_annotations(text))


def generate(out_dir: Path = SOURCE_ROOT) -> list[Path]:
    """Run protoc on the committed .proto files, writing under ``out_dir`` (the source
    root: files land in ``out_dir/synod/etcdapi/_pb``). Returns the generated paths.

    Raises RuntimeError if protoc fails."""
    from grpc_tools import protoc  # dev dependency: only the generator needs it

    protos = [f"{IMPORT_ROOT}/{target}" for _module, _source, target in PROTO_FILES]
    include = str(Path(protoc.__file__).parent / "_proto")
    args = ["protoc", f"-I{SOURCE_ROOT}", f"-I{include}", f"--python_out={out_dir}",
            f"--pyi_out={out_dir}", f"--grpc_python_out={out_dir}", *protos]  # fmt: skip
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed: {' '.join(args)}")
    for empty in ("authpb/auth_pb2_grpc.py", "mvccpb/kv_pb2_grpc.py"):  # no services there
        (out_dir / IMPORT_ROOT / empty).unlink()
    generated = sorted((out_dir / IMPORT_ROOT).rglob("*_pb2*.py*"))
    assert generated, "protoc wrote nothing"
    return generated


def main(argv: list[str] | None = None) -> int:
    """The command line. Returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m synod.etcdapi.genprotos")
    parser.add_argument("step", choices=("fetch", "generate"))
    args = parser.parse_args(argv)
    if args.step == "fetch":
        fetch()
    else:
        for path in generate():
            print(path.relative_to(SOURCE_ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
