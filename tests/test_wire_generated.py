"""The committed protobuf code is what grpcio-tools generates from wire.proto today."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

PROTOCOL_DIR = Path(__file__).resolve().parent.parent / "comm_tui" / "protocol"


def test_wire_pb2_is_up_to_date(tmp_path: Path) -> None:
    protoc = pytest.importorskip("grpc_tools.protoc")
    shutil.copy(PROTOCOL_DIR / "wire.proto", tmp_path / "wire.proto")
    status = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{tmp_path}",
            f"--python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            str(tmp_path / "wire.proto"),
        ]
    )
    assert status == 0
    for name in ("wire_pb2.py", "wire_pb2.pyi"):
        generated = (tmp_path / name).read_text()
        committed = (PROTOCOL_DIR / name).read_text()
        assert generated == committed, f"{name} is stale: regenerate it (see README)"
