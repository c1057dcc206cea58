"""The folder backend of storage targets: atomic puts, ranges, listing, clear errors."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from corestate.node.targets.folder import FolderStore
from corestate.node.targets.store import (
    BadTargetURL,
    ObjectMissing,
    TargetError,
    TargetMissing,
    parse_url,
)


def test_put_get_ranges_list_and_delete(tmp_path: Path) -> None:
    s = FolderStore("nas", tmp_path)
    s.check()
    s.put("p/ab/share-1", b"hello world", 11)
    s.put("p/cd/share-2", io.BytesIO(b"xyz"), 3)
    assert s.get("p/ab/share-1") == b"hello world"
    assert s.get("p/ab/share-1", 6, 3) == b"wor"
    assert s.get("p/ab/share-1", 20, 5) == b""
    assert list(s.list()) == [("p/ab/share-1", 11), ("p/cd/share-2", 3)]
    assert list(s.list("p/cd")) == [("p/cd/share-2", 3)]
    assert s.size("p/cd/share-2") == 3 and s.size("nope") is None
    s.delete("p/cd/share-2")
    s.delete("p/cd/share-2")  # a missing key is not an error
    with pytest.raises(ObjectMissing):
        s.get("p/cd/share-2")
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".")]  # the probe is gone


def test_a_failed_put_leaves_the_old_object_and_no_temporary(tmp_path: Path) -> None:
    s = FolderStore("nas", tmp_path)
    s.put("k", b"old", 3)
    with pytest.raises(TargetError, match="announced"):
        s.put("k", b"new bytes", 4)
    assert s.get("k") == b"old"
    assert os.listdir(tmp_path) == ["k"]


@pytest.mark.parametrize("key", ["../escape", "/abs", "a//b", "a/./b", "", "sp ace"])
def test_keys_cannot_leave_the_folder(tmp_path: Path, key: str) -> None:
    with pytest.raises(TargetError, match="bad object key"):
        FolderStore("nas", tmp_path / "t").put(key, b"x", 1)
    assert not (tmp_path / "escape").exists()


def test_a_missing_folder_is_named_with_what_to_do(tmp_path: Path) -> None:
    s = FolderStore("nas", tmp_path / "not-mounted")
    with pytest.raises(TargetMissing) as info:
        s.check()
    assert "mount" in info.value.hint
    with pytest.raises(TargetMissing):
        s.put("k", b"x", 1)
    assert not (tmp_path / "not-mounted").exists()  # never created behind a missing mount


def test_urls() -> None:
    assert str(parse_url("t", "s3://bucket/a/b/")) == "s3://bucket/a/b"
    assert parse_url("t", "s3://bucket").path == ""
    assert parse_url("t", "file:///mnt/nas/cs/").path == "/mnt/nas/cs"
    for bad in ("s3:///x", "file://host/x", "file:relative", "ftp://x/y"):
        with pytest.raises(BadTargetURL):
            parse_url("t", bad)
