"""open_beneath: a path below a directory fd, never through a symlink nor out of it, with
openat2 and with the component walk used where the kernel lacks openat2."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from corestate.kernel import linux

DIR = os.O_RDONLY | os.O_DIRECTORY


@pytest.fixture(params=["openat2", "walk"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(linux, "_have_openat2", request.param == "openat2")
    return str(request.param)


@pytest.fixture
def root(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    base = tmp_path / "root"
    (base / "a" / "b").mkdir(parents=True)
    (base / "a" / "file").write_text("x")
    (tmp_path / "outside").mkdir()
    (base / "a" / "out").symlink_to(tmp_path / "outside")
    (base / "a" / "in").symlink_to("b")  # a symlink that stays inside is refused too
    fd = os.open(base, DIR)
    try:
        yield base, fd
    finally:
        os.close(fd)


def test_plain_descent_opens_that_directory(mode: str, root: tuple[Path, int]) -> None:
    base, fd = root
    for rel, want in [(b"a/b", base / "a" / "b"), (b"a//./b/", base / "a" / "b"), (b"", base), (b".", base)]:
        got = linux.open_beneath(fd, rel, DIR)
        try:
            assert os.fstat(got).st_ino == os.stat(want).st_ino
        finally:
            os.close(got)
    f = linux.open_beneath(fd, b"a/file", os.O_RDONLY)
    try:
        assert os.read(f, 10) == b"x"
    finally:
        os.close(f)


@pytest.mark.parametrize("rel,codes", [
    (b"a/out", {errno.ELOOP, errno.ENOTDIR}),  # O_DIRECTORY on a symlink: ENOTDIR
    (b"a/out/x", {errno.ELOOP, errno.ENOTDIR}),
    (b"a/in", {errno.ELOOP, errno.ENOTDIR}),
    (b"a/in/x", {errno.ELOOP, errno.ENOTDIR}),
    (b"a/file/x", {errno.ENOTDIR}),
    (b"a/../../outside", {errno.EXDEV}),
    (b"..", {errno.EXDEV}),
])
def test_symlinks_and_escapes_are_refused(mode: str, root: tuple[Path, int], rel: bytes, codes: set[int]) -> None:
    _, fd = root
    with pytest.raises(OSError) as err:
        os.close(linux.open_beneath(fd, rel, DIR))
    assert err.value.errno in codes


def test_absolute_paths_are_refused(mode: str, root: tuple[Path, int], tmp_path: Path) -> None:
    _, fd = root
    with pytest.raises(OSError) as err:
        os.close(linux.open_beneath(fd, os.fsencode(tmp_path / "outside"), DIR))
    assert err.value.errno == errno.EXDEV


def test_a_kernel_without_openat2_falls_back_to_the_walk(monkeypatch: pytest.MonkeyPatch,
                                                         root: tuple[Path, int]) -> None:
    _, fd = root
    monkeypatch.setattr(linux, "_have_openat2", True)

    def enosys(*args: object) -> int:
        raise OSError(errno.ENOSYS, "no openat2")

    monkeypatch.setattr(linux, "openat2", enosys)
    got = linux.open_beneath(fd, b"a/b", DIR)
    os.close(got)
    assert linux._have_openat2 is False
    with pytest.raises(OSError) as err:
        linux.open_beneath(fd, b"a/out/x", DIR)
    assert err.value.errno in (errno.ELOOP, errno.ENOTDIR)


def test_a_symlinked_file_is_not_opened(mode: str, root: tuple[Path, int]) -> None:
    base, fd = root
    (base / "a" / "link").symlink_to(base / "a" / "file")
    with pytest.raises(OSError) as err:
        linux.open_beneath(fd, b"a/link", os.O_RDONLY)
    assert err.value.errno == errno.ELOOP
