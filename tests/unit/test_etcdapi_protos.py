"""The committed etcd API code is what the pinned generator makes of the committed
.proto files (synod.etcdapi.genprotos), and the annotation stripper is strict."""

from __future__ import annotations

from pathlib import Path

import pytest

from synod.etcdapi import genprotos


def test_regenerating_gives_the_committed_bytes(tmp_path: Path) -> None:
    generated = genprotos.generate(tmp_path)
    names = sorted(path.relative_to(tmp_path) for path in generated)
    committed_root = genprotos.SOURCE_ROOT
    committed = sorted(
        path.relative_to(committed_root)
        for path in (committed_root / genprotos.IMPORT_ROOT).rglob("*_pb2*.py*")
    )
    assert names == committed
    assert len(names) == 10  # 4 x (_pb2.py, _pb2.pyi) + rpc_pb2_grpc.py, v3lock_pb2_grpc.py
    for name in names:
        assert (tmp_path / name).read_bytes() == (committed_root / name).read_bytes(), name


def test_strip_removes_go_annotations_and_reroots_imports() -> None:
    text = (
        'syntax = "proto3";\nimport "gogoproto/gogo.proto";\n'
        'import "etcd/api/mvccpb/kv.proto";\nimport "google/api/annotations.proto";\n'
        "option (gogoproto.marshaler_all) = true;\n"
        "service KV {\n  rpc Range(RangeRequest) returns (RangeResponse) {\n"
        '      option (google.api.http) = {\n        post: "/v3/kv/range"\n'
        '        body: "*"\n        additional_bindings {\n            post: "/x"\n'
        "        }\n    };\n  }\n}\n"
    )
    out = genprotos.strip_annotations(text)
    assert out == (
        'syntax = "proto3";\nimport "synod/etcdapi/_pb/mvccpb/kv.proto";\n'
        "service KV {\n  rpc Range(RangeRequest) returns (RangeResponse) {}\n}\n"
    )


def test_strip_refuses_an_annotation_it_does_not_know() -> None:
    with pytest.raises(ValueError, match="not stripped"):
        genprotos.strip_annotations("message A {\n  int64 x = 1 [(gogoproto.nullable) = false];}")
