"""The TUI's modal screens: confirm, help, invite (token and QR), trust a peer, restore, diff,
forget preview. Each dismisses with what the person chose; the app does the calls."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import ClassVar

from corestate.tui.format import qr_text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, ProgressBar, Static


class Confirm(ModalScreen[bool]):
    """A yes/no question; ``y`` or the button confirms, ``n``/Esc refuses."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("y", "answer(True)", "yes"), Binding("n,escape", "answer(False)", "no")]

    def __init__(self, question: str, detail: str = "", yes: str = "Yes") -> None:
        super().__init__()
        self.question, self.detail, self.yes = question, detail, yes

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.question, classes="title")
            if self.detail:
                with VerticalScroll(classes="detail"):
                    yield Static(self.detail, markup=False)
            with Horizontal(classes="buttons"):
                yield Button(f"{self.yes} (y)", variant="error", id="yes")
                yield Button("No (n)", id="no")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    @on(Button.Pressed)
    def pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class TextView(ModalScreen[None]):
    """A long text to read (a diff, a forget preview's reasons); Esc or q closes."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q", "close", "close")]

    def __init__(self, title: str, text: str) -> None:
        super().__init__()
        self.title_text, self.text = title, text

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Label(self.title_text, classes="title")
            with VerticalScroll(classes="detail"):
                yield Static(self.text, markup=False, id="text")
            yield Label("Esc closes", classes="hint")

    def action_close(self) -> None:
        self.dismiss(None)


class Help(ModalScreen[None]):
    """Every key of the TUI (``?``)."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q,question_mark", "close", "close")]

    TEXT = """\
[b]Anywhere[/b]
  1-6 / d s b p a l   dashboard, snapshots, browse, peers, alerts, log
  ctrl+p              command palette (every action by name)
  r                   refresh now
  ?                   this help
  q                   quit

[b]Snapshots[/b]
  enter               browse the selected snapshot
  m                   mark it; D then diffs the marked one against the selected
  D                   diff the selected snapshot against the one before it
  f                   forget the selected snapshot (a dry run first, then confirm)

[b]Browse[/b]
  /                   search by name (fuzzy); enter in the list jumps to it
  R                   restore the selected file or folder (target, dry run, confirm)

[b]Peers and group[/b]
  i                   invite a member (token and QR code)
  x                   remove the selected member (confirm)
  t                   trust a peer (its address)
  u                   untrust the selected peer (confirm)

[b]Alerts / Log[/b]
  k                   acknowledge the selected alert (seen, for every client of the daemon)
  /                   filter the log

The mouse works too: click tabs, rows and buttons."""

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Label("Keys", classes="title")
            with VerticalScroll(classes="detail"):
                yield Static(self.TEXT)
            yield Label("Esc, ? or q closes", classes="hint")

    def action_close(self) -> None:
        self.dismiss(None)


class Invite(ModalScreen[None]):
    """A fresh invite: the token as text (to copy) and as a QR code (to scan)."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q", "close", "close")]

    def __init__(self, token: str, role: str, expires: str) -> None:
        super().__init__()
        self.token, self.role, self.expires = token, role, expires

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Label(f"Invite ({self.role}, expires {self.expires})", classes="title")
            with VerticalScroll(classes="detail"):
                yield Static("On the new machine: corestate group join TOKEN", markup=False)
                yield Static(self.token, id="token", markup=False)
                yield Static(qr_text(self.token), id="qr", markup=False)
            yield Label("The token is a secret: give it only to the new member. Esc closes.",
                        classes="hint")

    def action_close(self) -> None:
        self.dismiss(None)


class AskText(ModalScreen[str | None]):
    """One line of input (a peer's address), or None on Esc."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "cancel")]

    def __init__(self, title: str, placeholder: str, hint: str) -> None:
        super().__init__()
        self.title_text, self.placeholder, self.hint = title, placeholder, hint

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text, classes="title")
            yield Input(placeholder=self.placeholder, id="text")
            yield Label(self.hint, classes="hint")

    @on(Input.Submitted)
    def submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip() or None)

    def action_cancel(self) -> None:
        self.dismiss(None)


class RestoreDialog(ModalScreen[None]):
    """Restore ``path`` of ``snapshot`` below a chosen target: a dry run, a confirmation
    when something there would be overwritten, progress while it runs, the outcome.

    The app passes ``run(target, dry_run)``, a coroutine that makes the call and feeds
    :meth:`progress`; this screen only asks and shows."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "close", "close")]

    def __init__(self, snapshot: str, path: bytes, default_target: str,
                 run: Callable[[str, bool], Awaitable[None]]) -> None:
        super().__init__()
        self.snapshot, self.path, self.default_target, self.run = snapshot, path, default_target, run
        self.busy = False

    def compose(self) -> ComposeResult:
        shown = self.path.decode("utf-8", "backslashreplace") or "/ (everything)"
        with Vertical(classes="dialog wide"):
            yield Label(f"Restore {shown} from snapshot {self.snapshot}", classes="title")
            yield Label("Target folder (the path comes back below it, under its full original path):")
            yield Input(self.default_target, id="target")
            with Horizontal(classes="buttons"):
                yield Button("Dry run", id="dry")
                yield Button("Restore", variant="primary", id="go")
                yield Button("Close", id="close")
            yield ProgressBar(total=None, show_eta=True, id="bar")
            yield Static("", id="outcome", markup=False)

    def on_mount(self) -> None:
        self.query_one("#bar", ProgressBar).display = False  # shown once something runs
        self.query_one("#target", Input).focus()

    def destination(self, target: str) -> Path:
        return Path(target) / self.path.decode("utf-8", "surrogateescape").lstrip("/")

    @on(Button.Pressed, "#close")
    def action_close(self) -> None:
        if not self.busy:
            self.dismiss(None)

    @on(Button.Pressed, "#dry")
    def dry(self) -> None:
        self._start(dry_run=True)

    @on(Button.Pressed, "#go")
    @on(Input.Submitted)
    def go(self) -> None:
        target = self.query_one("#target", Input).value.strip()
        if not target or not os.path.isabs(os.path.expanduser(target)):
            self.say("The target must be an absolute folder, e.g. /tmp/restore")
            return
        dest = self.destination(os.path.expanduser(target))
        if os.path.lexists(dest):
            def answered(yes: bool | None) -> None:
                if yes:
                    self._start(dry_run=False)
            self.app.push_screen(Confirm(f"{dest} exists. Overwrite it?",
                                         "What the snapshot holds replaces what is there now.",
                                         yes="Overwrite"), answered)
            return
        self._start(dry_run=False)

    def _start(self, dry_run: bool) -> None:
        if self.busy:
            return
        target = os.path.expanduser(self.query_one("#target", Input).value.strip())
        if not os.path.isabs(target):
            self.say("The target must be an absolute folder, e.g. /tmp/restore")
            return
        self.busy = True
        self.say("dry run: counting…" if dry_run else "restoring…")
        bar = self.query_one("#bar", ProgressBar)
        bar.display = True
        bar.update(total=None, progress=0)
        self.run_worker(self._run(target, dry_run), exclusive=True, group="restore")

    async def _run(self, target: str, dry_run: bool) -> None:
        try:
            await self.run(target, dry_run)
        finally:
            self.busy = False

    def progress(self, done: int, total: int) -> None:
        self.query_one("#bar", ProgressBar).update(total=max(total, 1), progress=done)

    def say(self, text: str) -> None:
        self.query_one("#outcome", Static).update(text)


__all__ = ["AskText", "Confirm", "Help", "Invite", "RestoreDialog", "TextView"]
