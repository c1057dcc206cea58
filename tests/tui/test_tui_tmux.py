"""The real ``corestate tui`` command in a real terminal (tmux), read with capture-pane:
started before any daemon it says ``disconnected`` and how to start one, then connects
when the daemon appears; the daemon stops (``disconnected``) and comes back (it recovers
by itself); ``?`` shows the keys; ``q`` quits. While it sits idle and connected it uses
less than 1% of a core (measured from /proc/PID/stat over 10 s)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from meshutil import clean_env, make_mesh, wait_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (run-tests installs it)"),
]

WAIT = 60.0
IDLE_SECONDS = 10.0


@pytest.fixture
def session(tmp_path: Path) -> Iterator[str]:
    name = f"cs-tui-{os.getpid()}"
    yield name
    subprocess.run(["tmux", "kill-session", "-t", name], capture_output=True)


def screen(name: str) -> str:
    p = subprocess.run(["tmux", "capture-pane", "-p", "-t", name], capture_output=True, text=True)
    return p.stdout


def shows(name: str, words: str) -> str | None:
    text = screen(name)
    return text if words in text else None


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far (fields 14 and 15 of /proc/PID/stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_the_real_command_in_tmux(tmp_path: Path, session: str) -> None:
    mesh = make_mesh(tmp_path / "m", 1)
    node = mesh.nodes[0]
    env = {**clean_env(), "TERM": "xterm-256color"}
    cmd = [sys.executable, "-P", "-m", "corestate.node.cli", "--home", str(node.home), "tui"]
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "100", "-y", "30",
                    *[f"-e{k}={v}" for k, v in env.items() if k in ("PATH", "HOME", "TERM", "LANG")],
                    subprocess.list2cmdline(cmd)], check=True, env=env)
    try:
        # No daemon yet: it says so, and how to start one.
        text = wait_for(lambda: shows(session, "disconnected"), WAIT, "disconnected at start")
        assert "node run" in text
        mesh.start(0)
        text = wait_for(lambda: shows(session, "● connected"), WAIT, "the first connection")
        assert node.peer_id[-8:] in text
        # Idle and connected: event-driven, so next to no CPU.
        pid = int(subprocess.run(["tmux", "display-message", "-p", "-t", session, "#{pane_pid}"],
                                 capture_output=True, text=True, check=True).stdout.strip())
        time.sleep(2.0)  # let the first fetch settle
        before, t0 = cpu_seconds(pid), time.monotonic()
        time.sleep(IDLE_SECONDS)
        used = (cpu_seconds(pid) - before) / (time.monotonic() - t0)
        assert used < 0.01, f"the idle TUI used {used:.2%} of a core"
        # The daemon stops: the screen says so; it comes back: the TUI recovers by itself.
        mesh.stop(0)
        wait_for(lambda: shows(session, "disconnected"), WAIT, "disconnected after the stop")
        mesh.start(0)
        wait_for(lambda: shows(session, "● connected"), WAIT, "the reconnect")
        # ? shows the keys, quit among them.
        subprocess.run(["tmux", "send-keys", "-t", session, "?"], check=True)
        # Wait for the keys themselves, not the title: a loaded machine draws the screen in
        # more than one frame, and a capture between them had the title only.
        def helped() -> str | None:
            text = screen(session)
            return text if all(w in text for w in ("Keys", "quit", "restore")) else None
        text = wait_for(helped, WAIT, "the help with quit and restore among the keys")
        assert "quit" in text and "restore" in text
        subprocess.run(["tmux", "send-keys", "-t", session, "Escape"], check=True)
        wait_for(lambda: "1 Dashboard" in screen(session) and "Keys" not in screen(session), WAIT,
                 "the help to close")
        time.sleep(0.5)  # an Esc followed at once by q reads as alt+q, in any terminal
        subprocess.run(["tmux", "send-keys", "-t", session, "q"], check=True)
        wait_for(lambda: subprocess.run(["tmux", "has-session", "-t", session],
                                        capture_output=True).returncode != 0, WAIT, "q to quit")
    finally:
        mesh.close()
    print(f"idle CPU: {used:.3%} of a core over {IDLE_SECONDS:.0f}s")


@pytest.mark.parametrize("term", ["dumb", "xterm", "linux"])
def test_colours_degrade_on_a_plain_terminal(tmp_path: Path, session: str, term: str) -> None:
    """On a dumb or 16-colour terminal the TUI sends only the 16 standard colours (SGR 30-37,
    40-47, 90-97, 100-107), never 256-colour or true-colour codes."""
    mesh = make_mesh(tmp_path / "m", 1)
    env = {**clean_env(), "TERM": term}
    env.pop("COLORTERM", None)
    cmd = [sys.executable, "-P", "-m", "corestate.node.cli", "--home", str(mesh.nodes[0].home), "tui"]
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "80", "-y", "24",
                    "env -u COLORTERM TERM=" + term + " " + subprocess.list2cmdline(cmd)], check=True, env=env)
    wait_for(lambda: shows(session, "disconnected"), WAIT, "the screen")
    time.sleep(0.5)
    coloured = subprocess.run(["tmux", "capture-pane", "-p", "-e", "-t", session],
                              capture_output=True, text=True).stdout
    assert "\x1b[" in coloured  # it does use colour
    assert "38;2;" not in coloured and "48;2;" not in coloured, "true colour on a plain terminal"
    assert "38;5;" not in coloured and "48;5;" not in coloured, "256 colours on a plain terminal"


def test_without_a_terminal_it_says_so(tmp_path: Path) -> None:
    mesh = make_mesh(tmp_path / "m", 1)
    p = subprocess.run([sys.executable, "-P", "-m", "corestate.node.cli", "--home", str(mesh.nodes[0].home),
                        "tui"], capture_output=True, text=True, stdin=subprocess.DEVNULL, env=clean_env(),
                       timeout=WAIT)
    assert p.returncode == 1 and "needs a terminal" in p.stderr and "status --json" in p.stderr, p.stderr
