"""The control protocol: its messages, their limits, and that the TUI's import stays light.

Round trips and fuzzing of every control message run in test_messages.py (one generic
codec); here are the control protocol's own promises.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import cbor2
import pytest
from corestate.protocol import control
from corestate.protocol.errors import LocalProtocolError, RemoteProtocolError
from hypothesis import given
from hypothesis import strategies as st

# Hand-written strategies (not derived from the declared limits) as a cross-check of them.
short_text = st.text(max_size=15)  # at most 60 UTF-8 bytes: under every limit used here
path = st.binary(max_size=60)
entry = st.builds(
    control.Entry, path=path, type=st.sampled_from(["f", "d", "l"]), mode=st.integers(0, 0o7777),
    uid=st.integers(0, (1 << 32) - 1), gid=st.integers(0, (1 << 32) - 1),
    mtime_ns=st.integers(-(1 << 62), 1 << 62), size=st.integers(0, (1 << 63) - 1),
    target=st.none() | path,
)
alert = st.builds(
    control.Alert, time_ns=st.integers(0, (1 << 63) - 1), alert=st.sampled_from(["corrupt-share", "x"]),
    severity=st.sampled_from(list(control.SEVERITIES)), message=short_text,
    details=st.dictionaries(st.text(max_size=16), short_text, max_size=5),
)
any_control = st.one_of(
    st.builds(control.Hello, version=st.integers(0, 65535), client=short_text),
    st.builds(control.LsCall, snapshot=short_text, path=path, recursive=st.booleans()),
    st.builds(control.LsPage, entries=st.lists(entry, max_size=4).map(tuple)),
    st.builds(control.Done, items=st.integers(0, (1 << 63) - 1)),
    st.builds(control.Missed, count=st.integers(0, (1 << 63) - 1)),
    alert,
    st.builds(control.Subscribe, topics=st.lists(st.sampled_from(["backup", "alert"]), max_size=3).map(tuple)),
    st.just(control.Ok()),
    st.builds(control.Error, code=short_text, message=short_text, retryable=st.booleans()),
)


@given(any_control)
def test_round_trip(msg: control.Message) -> None:
    data = control.encode(msg)
    assert control.decode(data) == msg
    assert control.encode(control.decode(data)) == data


def test_golden_encoding() -> None:
    assert control.encode(control.Done(items=3)) == bytes.fromhex(
        "a3" "6174" "64646f6e65" "6176" "01" "656974656d73" "03"
    )
    # A record inside a message is the map of its fields; an absent value is null.
    page = control.LsPage(entries=(control.Entry(path=b"/a", type="f", mode=0o644, uid=0, gid=0,
                                                 mtime_ns=1, size=2, target=None),))
    assert control.encode(page) == bytes.fromhex(
        "a3"
        "6174" "676c732d70616765"
        "6176" "01"
        "67656e7472696573" "81"
        "a8" "6367696400" "63756964" "00" "646d6f6465" "1901a4" "6470617468" "422f61"
        "6473697a6502" "6474797065" "6166" "66746172676574" "f6" "686d74696d655f6e73" "01"
    )


ACCEPTED: list[Any] = [
    control.BackupCall(paths=tuple(b"/" + b"p" * 4095 for _ in range(200)),
                       exclude=tuple("e" * 1024 for _ in range(200)), k=255, n=255, estimate=True,
                       skipped=True),
    control.LsCall(snapshot="s" * 256, path=b"\xff" * 65536, recursive=True),
    control.Alert(time_ns=0, alert="a" * 64, severity="critical", message="m" * 4096,
                  details={f"{i:064}": "v" * 1024 for i in range(16)}),
    control.Hello(version=65535, client="c" * 64),
    control.Subscribe(topics=tuple("t" * 32 for _ in range(32))),
]


@pytest.mark.parametrize("msg", ACCEPTED, ids=lambda m: m.TYPE)
def test_limits_are_inclusive_and_fit_the_control_frame(msg: control.Message) -> None:
    data = control.encode(msg)
    assert len(data) <= control.CONTROL_MAX_FRAME
    assert control.decode(data) == msg


REFUSED: list[tuple[type[control.Message], dict[str, Any]]] = [
    (control.Hello, {"version": 65536, "client": ""}),
    (control.Hello, {"version": 2, "client": "c" * 65}),
    (control.LsCall, {"snapshot": "s" * 257, "path": b"", "recursive": False}),
    (control.LsCall, {"snapshot": "latest", "path": "/not/bytes", "recursive": False}),
    (control.LsCall, {"snapshot": "latest", "path": b"", "recursive": 1}),
    (control.Done, {"items": -1}),
    (control.Missed, {"count": 1 << 63}),
    (control.Subscribe, {"topics": ("t",) * 33}),
    (control.Subscribe, {"topics": ("t" * 33,)}),
    (control.Alert, {"time_ns": 0, "alert": "a", "severity": "s", "message": "m",
                     "details": {f"{i}": "v" for i in range(17)}}),
    (control.Alert, {"time_ns": 0, "alert": "a", "severity": "s", "message": "m", "details": {"k": 1.5}}),
    (control.Alert, {"time_ns": 0, "alert": "a", "severity": "s", "message": "m", "details": {"k": None}}),
    (control.Alert, {"time_ns": -1, "alert": "a", "severity": "s", "message": "m", "details": {}}),
]


@pytest.mark.parametrize(("cls", "fields"), REFUSED, ids=lambda x: getattr(x, "TYPE", None))
def test_out_of_limits(cls: type[control.Message], fields: dict[str, Any]) -> None:
    with pytest.raises(LocalProtocolError):
        cls(**fields)
    data = cbor2.dumps({"t": cls.TYPE, "v": 1, **fields}, canonical=True)
    with pytest.raises(RemoteProtocolError):
        control.decode(data)


def test_importing_control_loads_no_trio_libp2p_or_node() -> None:
    code = (
        "import sys, corestate.protocol.control\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('trio', 'libp2p', 'textual')"
        " or m.startswith('corestate.node')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
