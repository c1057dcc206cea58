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
short_text = st.text(max_size=30)
run = st.builds(
    control.Run,
    argv=st.lists(short_text, max_size=5),
    cwd=short_text,
    tty=st.booleans(),
    width=st.integers(0, 1000),
)
output = st.builds(control.Output, fd=st.sampled_from([1, 2]), text=st.text(max_size=200))
progress = st.builds(
    control.Progress,
    label=short_text,
    done=st.integers(0, (1 << 63) - 1),
    total=st.integers(-1, (1 << 63) - 1),
    unit=st.sampled_from(["B", "files", "packs", ""]),
)
event = st.builds(
    control.Event,
    kind=st.sampled_from(["peer-up", "peer-down", "alert", "progress"]),
    fields=st.dictionaries(
        st.text(max_size=16),
        st.one_of(short_text, st.integers(-(1 << 63), (1 << 63) - 1), st.booleans()),
        max_size=10,
    ),
)
any_control = st.one_of(
    run,
    output,
    progress,
    event,
    st.builds(control.Exit, code=st.integers(0, 255)),
    st.builds(control.Input, text=short_text),
    st.just(control.Subscribe()),
    st.just(control.Ok()),
    st.builds(control.Error, code=short_text, message=short_text, retryable=st.booleans()),
)


@given(any_control)
def test_round_trip(msg: control.Message) -> None:
    data = control.encode(msg)
    assert control.decode(data) == msg
    assert control.encode(control.decode(data)) == data


def test_golden_encoding() -> None:
    assert control.encode(control.Exit(code=3)) == bytes.fromhex(
        "a3" "6174" "6465786974" "6176" "01" "64636f6465" "03"
    )
    ev = control.Event(kind="alert", fields={"n": 1, "ok": True, "what": "disk"})
    assert control.encode(ev) == bytes.fromhex(
        "a4"
        "6174" "656576656e74"
        "6176" "01"
        "646b696e64" "65616c657274"
        "666669656c6473" "a3" "616e" "01" "626f6b" "f5" "6477686174" "646469736b"
    )


ACCEPTED: list[Any] = [
    control.Run(argv=("x" * 4096,) * 256, cwd="/" * 4096, tty=True, width=1000),
    control.Run(argv=(), cwd="", tty=False, width=0),
    control.Output(fd=2, text="x" * control.MAX_OUTPUT),
    control.Output(fd=1, text="é" * (control.MAX_OUTPUT // 2)),
    control.Progress(label="l" * 256, done=0, total=-1, unit="files"),
    control.Event(kind="k" * 64, fields={f"{i:064}": "v" * 4096 for i in range(64)}),
    control.Event(kind="", fields={"i": -(1 << 63), "j": (1 << 63) - 1, "b": False}),
    control.Input(text="p" * 4096),
]


@pytest.mark.parametrize("msg", ACCEPTED, ids=lambda m: m.TYPE)
def test_limits_are_inclusive_and_fit_the_control_frame(msg: control.Message) -> None:
    data = control.encode(msg)
    assert len(data) <= control.CONTROL_MAX_FRAME
    assert control.decode(data) == msg


REFUSED: list[tuple[type[control.Message], dict[str, Any]]] = [
    (control.Run, {"argv": ("x",) * 257, "cwd": "", "tty": False, "width": 0}),
    (control.Run, {"argv": ("x" * 4097,), "cwd": "", "tty": False, "width": 0}),
    (control.Run, {"argv": (), "cwd": "", "tty": 1, "width": 0}),
    (control.Run, {"argv": (), "cwd": "", "tty": False, "width": 1001}),
    (control.Run, {"argv": (b"ls",), "cwd": "", "tty": False, "width": 0}),
    (control.Output, {"fd": 0, "text": ""}),
    (control.Output, {"fd": 3, "text": ""}),
    (control.Output, {"fd": 1, "text": "x" * (control.MAX_OUTPUT + 1)}),
    (control.Progress, {"label": "", "done": -1, "total": 0, "unit": ""}),
    (control.Progress, {"label": "", "done": 0, "total": -2, "unit": ""}),
    (control.Progress, {"label": "", "done": 0, "total": 0, "unit": "u" * 17}),
    (control.Exit, {"code": 256}),
    (control.Exit, {"code": -1}),
    (control.Event, {"kind": "k", "fields": {f"{i}": 1 for i in range(65)}}),
    (control.Event, {"kind": "k", "fields": {"k" * 65: 1}}),
    (control.Event, {"kind": "k", "fields": {"k": 1.5}}),
    (control.Event, {"kind": "k", "fields": {"k": None}}),
    (control.Event, {"kind": "k", "fields": {"k": ["nested"]}}),
    (control.Event, {"kind": "k", "fields": {"k": 1 << 63}}),
    (control.Input, {"text": "p" * 4097}),
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
