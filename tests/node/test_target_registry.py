"""``HOME/targets.json`` (node/targets/registry.py): what ``save`` writes loads back, and a
file of any other shape is a TargetError naming it, never another exception."""

from __future__ import annotations

from pathlib import Path

import pytest
from corestate.node.targets import registry
from corestate.node.targets.registry import TargetSpec
from corestate.node.targets.store import TargetError


def test_saved_targets_load_back(tmp_path: Path) -> None:
    specs = [TargetSpec("nas", "file:///mnt/nas", quota=1 << 40),
             TargetSpec("b2", "s3://bucket/x", endpoint="https://s3.example", profile="p")]
    registry.save(tmp_path, specs)
    assert registry.load(tmp_path) == sorted(specs, key=lambda s: s.name)
    assert registry.load(tmp_path / "nowhere") == []


@pytest.mark.parametrize("body", [
    b"[1, 2]",  # AttributeError: a list has no .get
    b"5",
    b'{"targets": {"name": "nas"}}',
    b'{"targets": [7]}',
    b'{"targets": [{"name": "nas", "url": "file:///x", "qunta": 5}]}',  # TypeError: a key
    b'{"targets": [{"name": "nas"}]}',
    b'{"targets": [{"name": "nas", "url": "file:///x", "quota": "10 GiB"}]}',
    b'{"targets": [{"name": 5, "url": "file:///x"}]}',
    b"[" * 100_000,  # RecursionError from the JSON parser
    b"\xff\xfe",
], ids=["list", "number", "targets-map", "target-number", "unknown-key", "no-url",
        "quota-text", "name-number", "deep-arrays", "not-utf8"])
def test_a_damaged_file_is_a_target_error(tmp_path: Path, body: bytes) -> None:
    """Found by fuzzing (tests/fuzz, target targets-json): every one of these but the last
    escaped load as AttributeError, TypeError or RecursionError (or loaded a target whose
    quota was text)."""
    (tmp_path / registry.FILE_NAME).write_bytes(body)
    with pytest.raises(TargetError, match="damaged"):
        registry.load(tmp_path)
