"""Regenerate `synod.etcdapi._pb` from etcd's own .proto files.

Two steps, `python -m synod.etcdapi.genprotos fetch|generate`:

* ``fetch`` (network, `make etcdapi-protos`): download etcd's API Go module
  (``go.etcd.io/etcd/api/v3`` at ``ETCD_API_VERSION``) from the Go module proxy, check
  its sha256, and write its ``rpc.proto``, ``kv.proto`` and ``auth.proto`` under
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

ETCD_API_VERSION = "v3.5.17"
ETCD_API_ZIP_SHA256 = "d80cce415489199ec20ab23746bab24ec290014dcca023ea4719717650882394"
GO_PROXY = "https://proxy.golang.org"
ZIP_BYTES_MAX = 16 * 1024 * 1024
PB_DIR = Path(__file__).resolve().parent / "_pb"
SOURCE_ROOT = PB_DIR.parents[2]  # node-image/: proto paths are synod/etcdapi/_pb/...
IMPORT_ROOT = "synod/etcdapi/_pb"
# (path in etcd's module, path under _pb)
PROTO_FILES = (
    ("authpb/auth.proto", "authpb/auth.proto"),
    ("mvccpb/kv.proto", "mvccpb/kv.proto"),
    ("etcdserverpb/rpc.proto", "etcdserverpb/rpc.proto"),
)
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


def fetch(version: str = ETCD_API_VERSION, sha256: str = ETCD_API_ZIP_SHA256) -> None:
    """Download etcd's API module and write the stripped .proto files under _pb/.

    Raises OSError (network), ValueError (checksum mismatch, annotation left)."""
    url = f"{GO_PROXY}/go.etcd.io/etcd/api/v3/@v/{version}.zip"
    with urllib.request.urlopen(url, timeout=60) as answer:
        data = answer.read(ZIP_BYTES_MAX + 1)
    if len(data) > ZIP_BYTES_MAX:
        raise ValueError(f"{url} is larger than {ZIP_BYTES_MAX} bytes")
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise ValueError(f"{url}: sha256 {digest}, expected {sha256}")
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for source, target in PROTO_FILES:
            text = archive.read(f"go.etcd.io/etcd/api/v3@{version}/{source}").decode()
            out = PB_DIR / target
            out.parent.mkdir(parents=True, exist_ok=True)
            header = f"// From go.etcd.io/etcd/api/v3@{version}/{source} by genprotos.py.\n"
            out.write_text(header + strip_annotations(text))


def generate(out_dir: Path = SOURCE_ROOT) -> list[Path]:
    """Run protoc on the committed .proto files, writing under ``out_dir`` (the source
    root: files land in ``out_dir/synod/etcdapi/_pb``). Returns the generated paths.

    Raises RuntimeError if protoc fails."""
    from grpc_tools import protoc  # dev dependency: only the generator needs it

    protos = [f"{IMPORT_ROOT}/{target}" for _source, target in PROTO_FILES]
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
