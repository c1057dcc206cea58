"""The ``corestate`` command line: the only place that turns errors into words.

Exit codes: 0 done and safe; 3 done but incomplete (files that could not be read); 1 failed;
2 usage error. ``--json`` prints machine-readable output: for long commands, status lines
while working and one result object on the last line of stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager as ContextManager
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from corestate.node import keystore
from corestate.node.home import Home, default_home
from corestate.node.local import LocalNode

from corestate.errors import CoreStateError

if TYPE_CHECKING:
    from corestate.node.runtime.port import MeshPort

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_INCOMPLETE = 0, 1, 2, 3


def _fs(b: bytes) -> str:
    return os.fsdecode(b)


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


class Out:
    """Where words, JSON and progress go: this terminal, or a CLI client of the daemon.

    ``write(fd, text)`` carries text (fd 1 or 2); ``progress(label, done, total, unit)``,
    when set, carries progress to a client that draws the bar itself.
    """

    def __init__(self, as_json: bool, *, write: Callable[[int, str], None] | None = None,
                 tty: bool | None = None,
                 progress: Callable[[str, int, int, str], None] | None = None,
                 emit: Callable[[Any], None] | None = None, scheduled: bool = False) -> None:
        self.json = as_json
        self._write = write or _write_local
        self.tty = (sys.stderr.isatty() if tty is None else tty) and not as_json
        self.progress = progress
        # In a daemon: where typed events go (protocol/control.py), and whether the
        # daemon's schedule (not a user) asked for this command.
        self.emit = emit
        self.scheduled = scheduled

    def say(self, text: str = "") -> None:
        if not self.json:
            self._write(1, text + "\n")

    def warn(self, text: str) -> None:
        self._write(2, f"warning: {text}\n")

    def error(self, text: str) -> None:
        self._write(2, text + "\n")

    def obj(self, obj: Any) -> None:
        self._write(1, json.dumps(obj, sort_keys=True) + "\n")


def _write_local(fd: int, text: str) -> None:
    stream = sys.stdout if fd == 1 else sys.stderr
    stream.write(text)
    stream.flush()


Bar = Callable[[], tuple[str, int, "int | None", str]]  # description, done, total, detail


@contextmanager
def _ticker(out: Out, status: Callable[[], dict[str, Any]], bar: Bar | None) -> Iterator[None]:
    """Progress while a block runs: a rich bar with ETA on a terminal (drawn here, or by
    the CLI client when the daemon runs the command), JSON status lines every second with
    --json, nothing otherwise."""
    if out.json:
        with _every(1.0, lambda: out.obj({"type": "status", **status()})):
            yield
        return
    if not out.tty or bar is None:
        yield
        return
    if out.progress is not None:
        send = out.progress

        def tick() -> None:
            desc, done, total, detail = bar()
            send(f"{desc}  {detail}".strip(), done, -1 if total is None else total, "B")
        with _every(0.25, tick):
            yield
        return
    with progress_bar() as update, _every(0.2, lambda: update(*bar())):
        yield


@contextmanager
def progress_bar() -> Iterator[Callable[[str, int, int | None, str], None]]:
    """A rich progress bar with rate and ETA on stderr; yields its update function."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )
    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
        TextColumn("{task.fields[detail]}"), TransferSpeedColumn(), TimeElapsedColumn(),
        TextColumn("ETA"), TimeRemainingColumn(), transient=True, console=Console(stderr=True),
    )
    task = progress.add_task("working", total=None, detail="")

    def update(desc: str, done: int, total: int | None, detail: str) -> None:
        progress.update(task, description=desc, completed=done, total=total, detail=detail)
    with progress:
        yield update


@contextmanager
def _every(seconds: float, tick: Callable[[], None]) -> Iterator[None]:
    """Call ``tick`` from a background thread every ``seconds`` while the block runs."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(seconds):
            tick()
    t = threading.Thread(target=loop, daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join()


def _passphrase(args: argparse.Namespace, confirm: bool = False) -> bytes:
    return keystore.read_passphrase(getattr(args, "passphrase_file", None), confirm=confirm)


def _open(args: argparse.Namespace, out: Out | None = None) -> ContextManager[LocalNode]:
    """The node: the daemon's (already open, not closed here) or opened now under the
    home lock."""
    daemon = getattr(args, "daemon", None)
    if daemon is not None:
        return nullcontext(daemon.node)
    home = Home(args.home)
    home.require()
    node = LocalNode.open(home, _passphrase(args), hsm_module=getattr(args, "hsm_module", None))
    args.opened_node = node
    for pid, reason in node.problems:
        msg = f"pack {pid.hex()[:16]} could not be read: {reason} (run `corestate check`)"
        if out is not None:
            out.warn(msg)
        else:
            print(f"warning: {msg}", file=sys.stderr)
    return node


def _port(args: argparse.Namespace) -> MeshPort | None:
    """The way to the mesh: the daemon's, or a transient host started on first use."""
    daemon = getattr(args, "daemon", None)
    if daemon is not None:
        return cast("MeshPort", daemon.port())
    return cast("MeshPort | None", getattr(args, "mesh_port", None))


# -- commands ---------------------------------------------------------------------------


def cmd_init(args: argparse.Namespace, out: Out) -> int:
    from corestate.node.local import init_home
    home = Home(args.home)
    if home.exists():
        from corestate.node.errors import HomeExists
        raise HomeExists(str(home.path))
    if args.recover:
        if args.phrase_file:
            try:
                phrase = Path(args.phrase_file).read_text()
            except OSError as exc:
                raise CoreStateError(f"cannot read the phrase file: {exc.strerror}: {args.phrase_file}")
        elif sys.stdin.isatty():
            import getpass
            phrase = getpass.getpass("Recovery phrase (24 words): ")
        else:
            raise CoreStateError("init --recover needs the phrase", hint="pass --phrase-file FILE")
        root = keystore.phrase_to_root(phrase)
    else:
        root = keystore.new_root()
    hsm = None
    if args.hsm_module or args.hsm_token:
        if not (args.hsm_module and args.hsm_token):
            raise CoreStateError("an HSM seal needs both --hsm-module and --hsm-token",
                                 hint="e.g. --hsm-module /usr/lib/softhsm/libsofthsm2.so --hsm-token mytoken")
        hsm = (args.hsm_module, args.hsm_token)
    passphrase = _passphrase(args, confirm=hsm is None)
    existed = home.path.exists()
    try:
        keys = init_home(home, root, passphrase, hsm=hsm, generation=args.generation)
    except CoreStateError:
        # Nothing half-made stays behind: a failed seal leaves no key; a home folder that
        # this init created goes too (one the user made is left as it was found).
        if not existed and not home.key_path.exists():
            import shutil
            shutil.rmtree(home.path, ignore_errors=True)
        raise
    phrase_out = keystore.root_to_phrase(root)
    recovered = None
    if args.recover and args.peer:
        with LocalNode.open(home, passphrase, hsm_module=args.hsm_module) as node:
            args.opened_node = node
            recovered = _recover_from_group(args, node, out)
    elif args.peer:
        raise CoreStateError("--peer is for `init --recover`", hint="a new node joins with `group join TOKEN`")
    if out.json:
        out.obj({"home": str(home.path), "peer_id": keys.peer_id,
                 "phrase": None if args.recover else phrase_out, "recovered": bool(args.recover),
                 "from_group": recovered})
        return EXIT_OK
    out.say(f"created node home {home.path}")
    out.say(f"peer id  {keys.peer_id}")
    if args.recover:
        out.say("keys recovered from the phrase; `corestate snapshots` lists what the store holds")
    else:
        out.say("")
        out.say("Recovery phrase — write it down and keep it offline. It is shown only now.")
        out.say("With it alone a fresh machine gets every key of this node back:")
        out.say("")
        words = phrase_out.split()
        for i in range(0, 24, 6):
            out.say("  " + "  ".join(f"{i + j + 1:2d}.{w:<9}" for j, w in enumerate(words[i:i + 6])))
        out.say("")
    out.say(f"protect paths with `corestate backup PATH`, or list them in {home.config_path}")
    return EXIT_OK


def _recover_from_group(args: argparse.Namespace, node: LocalNode, out: Out) -> dict[str, Any]:
    """A fresh home with the phrase's keys: fetch this node's own signed partition from
    the group, bump its epoch (a stale instance's later writes are then refused), rebuild
    the share ledger from its placement records, and bring back the index from the packs
    (every pack is fetched once; data packs are dropped again, metadata packs kept)."""
    from corestate.node.peers import split_peer_addr
    peer, transport = split_peer_addr(args.peer)
    node.book.add(peer, [transport] if transport else [], trusted=True)
    port = _port(args)
    assert port is not None
    out.say(f"asking {peer[-8:]} for this node's records ...")
    port.call(lambda mesh: mesh.groups.sync_with(peer, [transport] if transport else None))
    me = node.keys.peer_id
    if not node.group.in_group or not node.group.is_member(me):
        raise CoreStateError("that peer does not know this node as a member of its group",
                             hint="check the phrase (and the peer address); a removed identity "
                                  "re-joins with `group join` under a new invite")

    # The newest head may be at another member.
    others = [p for p in node.group.members() if p not in (me, peer)]
    port.call(lambda mesh: mesh.groups.sync_all(others))
    return _rebuild_from_partition(args, node, out)


def _rebuild_from_partition(args: argparse.Namespace, node: LocalNode, out: Out) -> dict[str, Any]:
    """Rebuild the share ledger and the index from this node's records in the catalog:
    its own partition, or (after a move to a new identity generation) the newest
    partition of one of its earlier identities."""
    import cbor2
    from corestate.node.runtime import meshops
    me = node.keys.peer_id
    port = _port(args)
    assert port is not None
    def has_records(author: str) -> bool:  # snapshots or packs, not just an address advert
        return any(k[:1] in (b"s", meshops.PACK_KEY) for k in node.group.catalog.entries(author))
    source = me
    if not has_records(me):
        source = next((old for old in node.earlier_ids if has_records(old)), me)
    head = node.group.catalog.head(me)
    entries = {k: v for k, v in node.group.catalog.entries(source).items()}
    entries = {k: e.value for k, e in entries.items() if e.value is not None}
    if source != me:
        # The old identity's sealed values are bound to its PeerID: re-seal for this one.
        from corestate.node.core import catalog as cat
        for k, v in list(entries.items()):
            if k[:1] == b"s":
                try:
                    plain = cat.open_value(node.keys.catalog_key, source, k, v)
                except CoreStateError:
                    del entries[k]
                    continue
                entries[k] = cat.seal_value(node.keys.catalog_key, me, k, plain)
        entries.pop(b"a", None)
    old_epoch = head[0] if head else 0
    node.group.set_epoch(old_epoch + 1)
    packs = 0
    for key, value in entries.items():
        if not key.startswith(meshops.PACK_KEY) or len(key) != 33:
            continue
        pid = key[1:]
        k, n, size, shares, *rest = cbor2.loads(value)
        owner = rest[0] if rest else ("" if source == me else source)
        node.ledger.begin_pack(pid, k, n, size, owner=owner)
        if owner and len(rest) == 0:
            # Carried into this identity's partition: say whose name the holders filed it under.
            entries[key] = cbor2.dumps([k, n, size, shares, owner], canonical=True)
        for index, holder, root, ssize in shares:
            node.ledger.record_share(pid, index, holder, root, ssize)
        node.ledger.set_local(pid, False)
        packs += 1
    out.say(f"found {packs} packs and {sum(1 for k in entries if k[:1] == b's')} snapshots; fetching the packs "
            "to rebuild the index ...")
    fetched = meshops.fetch(node, port, node.ledger.remote_only())
    problems = node.repo.sync()
    keep = node.metadata_packs()
    for pid in keep:
        node.ledger.set_local(pid, True)
    meshops.drop_fetched(node, [p for p in fetched if p not in keep])
    # The new epoch supersedes the old one: carry forward what this node still claims.
    node.group.write(entries)
    _group_round(args, node)
    for pid, reason in problems:
        out.warn(f"pack {pid.hex()[:16]}: {reason}")
    snaps = node.repo.snapshots()
    out.say(f"recovered {len(snaps)} snapshot(s) from the group; epoch {old_epoch} -> {old_epoch + 1}")
    return {"snapshots": len(snaps), "packs": packs, "epoch": old_epoch + 1}


def cmd_key_passwd(args: argparse.Namespace, out: Out) -> int:
    home = Home(args.home)
    home.require()
    home.lock()
    try:
        sealed = home.key_path.read_bytes()
        if keystore.is_hsm(sealed):
            raise CoreStateError("this node's key is sealed by an HSM token, not a passphrase",
                                 hint="change the token's user PIN with the token's own tools")
        root = keystore.unseal(sealed, _passphrase(args))
        new = keystore.read_passphrase(args.new_passphrase_file, confirm=True) if args.new_passphrase_file \
            else _prompt_new()
        keystore.write_key(home.key_path, root, new)
    finally:
        home.unlock()
    out.say("passphrase changed")
    if out.json:
        out.obj({"changed": True})
    return EXIT_OK


def _prompt_new() -> bytes:
    if not sys.stdin.isatty():
        raise CoreStateError("the new passphrase is needed", hint="pass --new-passphrase-file FILE")
    import getpass
    a = getpass.getpass("New passphrase: ").encode()
    if not a or getpass.getpass("New passphrase again: ").encode() != a:
        raise CoreStateError("the new passphrases are empty or differ", hint="run the command again")
    return a


def _scan_totals(paths: list[Path], stats: Any, stop: threading.Event) -> None:
    """Count files and bytes ahead of the backup, for the ETA (terminal only)."""
    files = size = 0
    stack = [os.fsencode(p) for p in paths]
    while stack and not stop.is_set():
        p = stack.pop()
        try:
            with os.scandir(p) as it:
                for e in it:
                    if e.is_dir(follow_symlinks=False):
                        stack.append(e.path)
                    elif e.is_file(follow_symlinks=False):
                        files += 1
                        size += e.stat(follow_symlinks=False).st_size
        except NotADirectoryError:
            try:
                size += os.lstat(p).st_size
                files += 1
            except OSError:
                pass
        except OSError:
            pass
    stats.estimate_files, stats.estimate_bytes = files, size


def _text(x: bytes | str | Path, limit: int = 1000) -> str:
    """Any path as wire text: valid UTF-8 (undecodable bytes replaced), at most ``limit``
    characters (4 KiB)."""
    b = x if isinstance(x, bytes) else os.fsencode(x)
    return b.decode("utf-8", "replace")[:limit]


@contextmanager
def _progress_events(out: Out, make: Callable[[], Any]) -> Iterator[None]:
    """In a daemon: a typed progress event every second while the block runs, and one at
    its end however short it was, so every subscriber sees every operation move."""
    emit = out.emit
    if emit is None:
        yield
        return
    with _every(1.0, lambda: emit(make())):
        yield
    emit(make())


def _eta(done: int, total: int, seconds: float) -> int:
    """Seconds left at the rate so far; -1 while that says nothing."""
    if total <= done or done <= 0 or seconds <= 0.5:
        return -1
    return int((total - done) / (done / seconds))


def cmd_backup(args: argparse.Namespace, out: Out) -> int:
    from corestate.protocol import control as c
    try:
        return _backup(args, out)
    except (CoreStateError, OSError) as exc:
        if out.emit is not None:
            out.emit(c.BackupFailed(time_ns=time.time_ns(), scheduled=out.scheduled, message=str(exc)[:4000],
                                    hint=getattr(exc, "hint", "")[:1000]))
        raise


def _backup(args: argparse.Namespace, out: Out) -> int:
    from corestate.node.engine.backup import Backup, BackupStats
    from corestate.protocol import control as c
    with _open(args, out) as node:
        # Paths in config.toml are relative to the home (absolute ones stay as they are).
        paths = [Path(p) for p in args.paths] if args.paths else [node.home.path / p for p in node.cfg.paths]
        if not paths:
            raise CoreStateError("nothing to back up",
                                 hint=f"give paths: `corestate backup PATH...`, or list them in {node.home.config_path}")
        for p in paths:
            if not os.path.lexists(p):
                raise CoreStateError(f"{p}: no such file or directory", hint="check the path")
        stats = BackupStats()
        stop = threading.Event()
        if out.tty:
            threading.Thread(target=_scan_totals, args=(paths, stats, stop), daemon=True).start()
        journal = _journal_for(args, paths)
        prev: list[str | None] = [None]
        engine = Backup(node.repo, node.cfg, skip_dirs=node.skip_dirs(),
                        exclude=node.cfg.exclude + (args.exclude or []), stats=stats,
                        state_dir=node.home.path / "snapshots",
                        changes=None if journal is None else lambda: journal.changes_since(prev[0]))
        if journal is not None:
            prev[0] = _journal_token(node, engine.fingerprint_salt)
            new_token = journal.mark()  # before any snapshot is taken (kernel/journal.py)

        def status() -> dict[str, Any]:
            return {"files": stats.files, "bytes_read": stats.bytes_read, "bytes_done": stats.bytes_total,
                    "bytes_added": stats.bytes_added, "total_bytes": stats.estimate_bytes,
                    "current": _fs(stats.current)}

        def bar() -> tuple[str, int, int | None, str]:
            return ("backup", stats.bytes_total, stats.estimate_bytes or None,
                    f"{stats.files} files, +{_human(stats.bytes_added)}")
        t0 = time.monotonic()

        def progress_event() -> c.BackupProgress:
            return c.BackupProgress(
                time_ns=time.time_ns(), files=stats.files, bytes_done=stats.bytes_total,
                bytes_total=stats.estimate_bytes or -1, bytes_added=stats.bytes_added,
                eta_s=_eta(stats.bytes_total, stats.estimate_bytes or 0, time.monotonic() - t0),
                current=_text(stats.current))
        if out.emit is not None:
            out.emit(c.BackupStarted(time_ns=time.time_ns(), scheduled=out.scheduled,
                                     paths=tuple(_text(p) for p in paths[:256])))
        try:
            with _ticker(out, status, bar), _progress_events(out, progress_event):
                result = engine.run(paths)
        finally:
            stop.set()
        if journal is not None:
            _save_journal_token(node, new_token, engine.fingerprint_salt)
        pushed = _push(args, node, out)
        _record_in_catalog(args, node, result, pushed)
    st = result.stats
    for path, msg in st.errors:
        out.warn(f"{_fs(path)}: {msg} (not backed up)")
    for path in st.torn:
        out.warn(f"{_fs(path)}: changed while it was read; stored as read and marked torn")
    for path, msg in st.warnings:
        if out.tty or args.verbose:
            out.warn(f"{_fs(path)}: {msg}")
    code = EXIT_INCOMPLETE if st.errors or (pushed is not None and not pushed.safe) else EXIT_OK
    rate = st.bytes_total / result.seconds / 1e6 if result.seconds else 0.0
    if out.emit is not None:
        out.emit(c.BackupFinished(
            time_ns=time.time_ns(), scheduled=out.scheduled, snapshot_id=result.snapshot_id.hex(),
            code=code, files=st.files, bytes_read=st.bytes_read, bytes_added=st.bytes_added,
            errors=len(st.errors), seconds=f"{result.seconds:.3f}"))
    if out.json:
        out.obj({
            "type": "summary", "snapshot_id": result.snapshot_id.hex(), "files": st.files,
            "dirs": st.dirs, "files_unchanged": st.files_unchanged, "bytes_total": st.bytes_total,
            "bytes_read": st.bytes_read, "bytes_added": st.bytes_added, "chunks_new": st.chunks_new, "bytes_new": st.bytes_new,
            "errors": [[_fs(p), m] for p, m in st.errors], "torn": [_fs(p) for p in st.torn],
            "torn_files": len(st.torn), "snapshot_provider": result.snapshot.provider,
            "paths_visited": st.paths_visited,
            "change_journal": None if st.journal is None else {
                "used": st.journal[0] == "used", "detail": st.journal[1]},
            "seconds": round(result.seconds, 3), "complete": code == EXIT_OK,
            "mesh": _push_json(pushed),
        })
        return code
    out.say(f"snapshot {result.snapshot_id.hex()[:8]} saved ({result.snapshot.provider} snapshot)")
    out.say(f"  files {st.files} ({st.files_unchanged} unchanged), dirs {st.dirs}, "
            f"{_human(st.bytes_total)} in {result.seconds:.1f}s ({rate:.0f} MB/s)")
    out.say(f"  read {_human(st.bytes_read)}, added {_human(st.bytes_added)} to the store")
    if st.errors:
        out.say(f"  INCOMPLETE: {len(st.errors)} path(s) could not be read (listed above)")
    if pushed is not None:
        _say_push(out, pushed)
    return code


def _journal_for(args: argparse.Namespace, paths: list[Path]) -> Any:
    """The daemon's change journal, when it watches exactly the paths being backed up."""
    journal = getattr(getattr(args, "daemon", None), "journal", None)
    if journal is None:
        return None
    if sorted(Path(os.path.abspath(p)) for p in paths) != journal.roots:
        return None
    return journal


def _journal_token(node: LocalNode, salt: bytes) -> str | None:
    """The journal position of the last recorded backup, if taken under these settings."""
    try:
        saved = json.loads((node.home.path / "journal" / "token.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(saved, dict) or saved.get("salt") != salt.hex():
        return None  # other excludes or chunking: the directory cache must be rebuilt
    token = saved.get("token")
    return token if isinstance(token, str) else None


def _save_journal_token(node: LocalNode, token: str, salt: bytes) -> None:
    from corestate.kernel.state import write_json
    write_json(node.home.path / "journal" / "token.json", {"token": token, "salt": salt.hex()})


def _push(args: argparse.Namespace, node: LocalNode, out: Out) -> Any:
    """On a mesh node, spread the new packs over peers; None on a standalone node."""
    from corestate.node.runtime import meshops
    if not meshops.is_mesh_node(node):
        if args.k or args.n:
            out.warn("--k/--n ignored: this node has no trusted peers (`corestate peer add`)")
        return None
    port = _port(args)
    if port is None:
        raise CoreStateError("this node has peers but no way to reach them", hint="report this as a bug")
    from corestate.node.runtime.reports import Progress
    prog = Progress()

    def bar() -> tuple[str, int, int | None, str]:
        return ("shares", prog.done, prog.total or None, "packs coded and placed")
    with _ticker(out, lambda: {"packs_placed": prog.done, "packs": prog.total}, bar):
        return meshops.push(node, port, k=args.k or 0, n=args.n or 0, progress=prog)


def _record_in_catalog(args: argparse.Namespace, node: LocalNode, result: Any, pushed: Any) -> None:
    """In a group: the snapshot (sealed to this node) and where each new pack's shares
    went, in this node's partition of the catalog; then tell the members."""
    if not node.group.in_group:
        return
    from corestate.node.runtime import meshops
    items = meshops.catalog_items(node, result.snapshot_id, pushed)
    node.group.write(items)
    _group_round(args, node)


def _push_json(res: Any) -> Any:
    if res is None:
        return None
    rep = res.report
    return {
        "k": res.k, "n": res.n, "peers_online": res.online, "peers_offline": res.offline,
        "packs_uploaded": res.uploaded, "local_copies_dropped": res.dropped_local,
        "share_bytes": rep.share_bytes if rep else 0, "seconds": round(rep.seconds, 3) if rep else 0,
        "degraded": [{"pack": p.hex(), "placed": placed, "k": k, "n": n} for p, placed, k, n in res.degraded],
        "problems": res.problems, "safe": res.safe,
    }


def _say_push(out: Out, res: Any) -> None:
    from corestate.node.runtime.meshops import describe_degraded, short
    rep = res.report
    if rep is not None:
        out.say(f"  mesh: {res.uploaded} pack(s) coded k={res.k} n={res.n} onto "
                f"{len(res.online)} peer(s) ({_human(rep.share_bytes)} of shares in {rep.seconds:.1f}s)")
    if res.offline:
        out.say(f"  peers offline: {', '.join(short(p) for p in res.offline)}")
    for line in res.problems:
        out.warn(line)
    for line in describe_degraded(res):
        out.warn(line)
    if not res.safe:
        out.say("  DEGRADED: not every pack has all its shares on peers; "
                "run the backup again when more peers are online")


def cmd_snapshots(args: argparse.Namespace, out: Out) -> int:
    with _open(args, out) as node:
        snaps = node.repo.snapshots()
    if out.json:
        out.obj([{
            "id": s.id.hex(), "short_id": s.short_id, "time_ns": s.record.time_ns,
            "host": s.record.hostname, "paths": [_fs(p) for p in s.record.paths],
            "files": s.record.files, "bytes": s.record.size, "torn": len(s.record.torn),
            "errors": len(s.record.errors), "provider": s.record.provider,
        } for s in snaps])
        return EXIT_OK
    if not snaps:
        out.say("no snapshots yet: `corestate backup PATH` makes one")
        return EXIT_OK
    out.say(f"{'ID':<9} {'TIME':<20} {'HOST':<16} {'FILES':>8} {'SIZE':>10}  PATHS")
    for s in snaps:
        t = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(s.record.time_ns / 1e9))
        out.say(f"{s.short_id:<9} {t:<20} {s.record.hostname[:16]:<16} {s.record.files:>8} "
                f"{_human(s.record.size):>10}  {', '.join(_fs(p) for p in s.record.paths)}")
    out.say(f"{len(snaps)} snapshot(s)")
    return EXIT_OK


def cmd_ls(args: argparse.Namespace, out: Out) -> int:
    from corestate.node.engine.inspect import find
    with _open(args, out) as node:
        snap = node.repo.resolve(args.snapshot)
        start = os.fsencode(args.path.rstrip("/")) if args.path and args.path != "/" else b""
        tree, top = find(node.repo, snap, start)
        rows = []
        if top is not None and top.subtree is None:
            rows.append((start, top))
        else:
            rows.extend(node.repo.walk(tree, start) if args.recursive or not start
                        else ((start + b"/" + n.name, n) for n in node.repo.tree(tree)))
        for path, n in rows:
            if out.json:
                out.obj({"path": _fs(path), "type": n.type, "mode": n.mode, "uid": n.uid, "gid": n.gid,
                         "mtime_ns": n.mtime_ns, "size": n.size,
                         "target": _fs(n.target) if n.target else None})
            else:
                t = time.strftime("%Y-%m-%d %H:%M", time.localtime(n.mtime_ns / 1e9))
                suffix = f" -> {_fs(n.target)}" if n.target else ""
                out.say(f"{n.type} {n.mode:04o} {n.uid:>5} {n.gid:>5} {n.size:>12} {t}  {_fs(path)}{suffix}")
    return EXIT_OK


def cmd_restore(args: argparse.Namespace, out: Out) -> int:
    from corestate.protocol import control as c
    try:
        return _restore(args, out)
    except (CoreStateError, OSError) as exc:
        if out.emit is not None:
            out.emit(c.RestoreFailed(time_ns=time.time_ns(), message=str(exc)[:4000],
                                     hint=getattr(exc, "hint", "")[:1000]))
        raise


def _restore(args: argparse.Namespace, out: Out) -> int:
    from corestate.node.engine.restore import Restore, RestoreStats
    from corestate.protocol import control as c
    with _open(args, out) as node:
        snap = node.repo.resolve(args.snapshot)
        stats = RestoreStats()
        includes = [os.fsencode("/" + p.strip("/")) for p in args.path or []]
        t0 = time.monotonic()
        if out.emit is not None and not args.dry_run:
            out.emit(c.RestoreStarted(time_ns=time.time_ns(), snapshot_id=snap.id.hex(),
                                      target=_text(os.path.abspath(args.target))))

        def progress_event() -> c.RestoreProgress:
            return c.RestoreProgress(
                time_ns=time.time_ns(), files=stats.files, files_total=stats.files_total,
                bytes_done=stats.bytes_written, bytes_total=stats.bytes_total,
                eta_s=_eta(stats.bytes_written, stats.bytes_total, time.monotonic() - t0))

        def status() -> dict[str, Any]:
            return {"files": stats.files, "files_total": stats.files_total,
                    "bytes_written": stats.bytes_written, "bytes_total": stats.bytes_total}

        def bar() -> tuple[str, int, int | None, str]:
            return ("restore", stats.bytes_written, stats.bytes_total or None,
                    f"{stats.files}/{stats.files_total} files")
        fetched = [] if args.dry_run else _fetch(args, node, out, snap, includes)
        try:
            with _ticker(out, status, bar), _progress_events(
                    out if not args.dry_run else Out(True), progress_event):
                Restore(node.repo, stats=stats).run(snap, Path(args.target), includes, dry_run=args.dry_run)
        finally:
            if fetched:
                from corestate.node.runtime.meshops import drop_fetched
                drop_fetched(node, fetched)
        secs = time.monotonic() - t0
    for path, msg in stats.errors:
        out.warn(f"{_fs(path)}: {msg}")
    code = EXIT_FAIL if stats.errors else EXIT_OK
    if out.emit is not None and not args.dry_run:
        out.emit(c.RestoreFinished(time_ns=time.time_ns(), snapshot_id=snap.id.hex(), code=code,
                                   files=stats.files, bytes=stats.bytes_total, errors=len(stats.errors)))
    if out.json:
        out.obj({"type": "summary", "snapshot_id": snap.id.hex(), "files": stats.files, "dirs": stats.dirs,
                 "other": stats.other,
                 "bytes": stats.bytes_total, "errors": [[_fs(p), m] for p, m in stats.errors],
                 "dry_run": args.dry_run, "seconds": round(secs, 3)})
        return code
    verb = "would restore" if args.dry_run else "restored"
    out.say(f"{verb} {stats.files} files, {stats.dirs} dirs, {stats.other} links/special, "
            f"{_human(stats.bytes_total)} from "
            f"snapshot {snap.short_id} into {os.path.abspath(args.target)} in {secs:.1f}s")
    if stats.errors:
        out.say(f"FAILED for {len(stats.errors)} path(s), listed above")
    return code


def _fetch(args: argparse.Namespace, node: LocalNode, out: Out, snap: Any, includes: list[bytes]) -> list[bytes]:
    """Bring back from peers the packs of ``snap`` that live only there."""
    from corestate.node.runtime import meshops
    remote = node.ledger.remote_only()
    if not remote:
        return []
    need = meshops.packs_of(node, snap, includes or None) & remote
    if not need:
        return []
    port = _port(args)
    if port is None:
        raise CoreStateError("this snapshot's data is on peers, and no way to reach them is open",
                             hint="report this as a bug")
    prog = [0, len(need), 0]

    def bar() -> tuple[str, int, int | None, str]:
        return ("fetch", prog[2], None, f"{prog[0]}/{prog[1]} packs from peers")

    def update(done: int, total: int, nbytes: int) -> None:
        prog[:] = [done, total, nbytes]
    with _ticker(out, lambda: {"packs_fetched": prog[0], "packs": prog[1], "bytes_fetched": prog[2]}, bar):
        return meshops.fetch(node, port, need, progress=update)


def cmd_diff(args: argparse.Namespace, out: Out) -> int:
    from corestate.node.engine.inspect import diff
    with _open(args, out) as node:
        a, b = node.repo.resolve(args.a), node.repo.resolve(args.b)
        changes = list(diff(node.repo, a.record.tree, b.record.tree))
    if out.json:
        out.obj([{"op": op, "path": _fs(p)} for op, p in changes])
        return EXIT_OK
    for op, p in changes:
        out.say(f"{op}  {_fs(p)}")
    counts = {k: sum(1 for op, _ in changes if op == k) for k in "+-MT"}
    out.say(f"{counts['+']} added, {counts['-']} removed, {counts['M']} modified, {counts['T']} type changed")
    return EXIT_OK


def cmd_check(args: argparse.Namespace, out: Out) -> int:
    from corestate.protocol import control as c
    code = _check(args, out)
    if out.emit is not None:
        out.emit(c.CheckFinished(time_ns=time.time_ns(), code=code))
    return code


def _check(args: argparse.Namespace, out: Out) -> int:
    from corestate.node.engine.inspect import check
    done = [0, 0]
    with _open(args, out) as node:
        def bar() -> tuple[str, int, int | None, str]:
            return ("check", done[0], done[1] or None, "packs")
        if args.rebuild_index:
            fetched: list[bytes] = []
            if node.ledger.remote_only():
                # The pack headers are the index: bring back the packs held only by peers.
                from corestate.node.runtime import meshops
                port = _port(args)
                if port is None:
                    raise CoreStateError("some packs are held only by peers, and no way to reach them is open",
                                         hint="report this as a bug")
                fetched = meshops.fetch(node, port, node.ledger.remote_only())
            try:
                problems = node.repo.rebuild_index()
            finally:
                if fetched:
                    from corestate.node.runtime import meshops
                    meshops.drop_fetched(node, [p for p in fetched if p not in node.metadata_packs()])
            out.say(f"index rebuilt from {len(node.repo.packs())} packs")
            for pid, reason in problems:
                out.warn(f"pack {pid.hex()[:16]} could not be read: {reason}")
        with _ticker(out, lambda: {"packs_done": done[0], "packs": done[1]}, bar):
            report = check(node.repo, read_data=args.read_data,
                           progress=lambda n, t: done.__setitem__(slice(0, 2), [n, t]),
                           remote=node.ledger.remote_only())
        survey = None
        from corestate.node.runtime import meshops
        port = _port(args)
        if port is not None and (meshops.is_mesh_node(node) or node.ledger.remote_only()):
            survey = meshops.survey(node, port)
    mesh_bad = survey is not None and any(
        t["at-risk"] or t["degraded"] for _, t in survey.per_snapshot)
    if out.json:
        out.obj({"type": "summary", "ok": report.ok and not mesh_bad, "packs": report.packs, "blobs": report.blobs,
                 "snapshots": report.snapshots, "trees": report.trees, "bytes_read": report.bytes_read,
                 "packs_on_peers_only": report.remote,
                 "damage": [{"what": d.what, "id": d.id.hex(), "reason": d.reason, "files": d.files}
                            for d in report.damage],
                 "mesh": None if survey is None else {
                     "shares": survey.shares,
                     "bad_holders": survey.bad_holders,
                     "snapshots": [{"id": sn.id.hex(), **t} for sn, t in survey.per_snapshot]}})
        if not report.ok:
            return EXIT_FAIL
        return EXIT_INCOMPLETE if mesh_bad else EXIT_OK
    if survey is not None:
        _say_survey(out, survey)
        if report.ok and mesh_bad:
            out.say(f"checked {report.packs} packs ({report.remote} on peers only), {report.blobs} blobs, "
                    f"{report.trees} trees, {report.snapshots} snapshots")
            out.say("local store intact; some packs are below full redundancy on the mesh (see above): "
                    "`corestate repair` rebuilds their missing shares on other peers")
            return EXIT_INCOMPLETE
    out.say(f"checked {report.packs} packs, {report.blobs} blobs, {report.trees} trees, "
            f"{report.snapshots} snapshots" + (f", read {_human(report.bytes_read)}" if args.read_data else ""))
    if report.ok:
        out.say("no damage found" + ("" if args.read_data else " (structure only; --read-data reads every byte)"))
        return EXIT_OK
    for d in report.damage:
        out.say(f"DAMAGED {d.what} {d.id.hex()[:16]}: {d.reason}")
        for f in d.files[:50]:
            out.say(f"    affects {f}")
        if len(d.files) > 50:
            out.say(f"    ... and {len(d.files) - 50} more")
    out.say(f"{len(report.damage)} damaged object(s)")
    if any(d.what == "index" for d in report.damage):
        out.say("the index is only a cache of the pack headers: "
                "`corestate check --rebuild-index` rebuilds it from the packs")
    return EXIT_FAIL


def cmd_repair(args: argparse.Namespace, out: Out) -> int:
    from corestate.protocol import control as c
    if out.emit is None or args.dry_run:
        return _repair(args, out)
    out.emit(c.RepairStarted(time_ns=time.time_ns(), scheduled=out.scheduled))
    code = EXIT_FAIL
    try:
        code = _repair(args, out)
    finally:
        out.emit(c.RepairFinished(time_ns=time.time_ns(), scheduled=out.scheduled, code=code))
    return code


def _repair(args: argparse.Namespace, out: Out) -> int:
    from corestate.node.runtime import meshops
    from corestate.node.runtime.reports import Progress
    with _open(args, out) as node:
        port = _port(args)
        if port is None or not (node.ledger.all() or node.ledger.doomed()):
            out.say("nothing to repair: no pack of this node is on the mesh")
            if out.json:
                out.obj({"type": "summary", "packs_full": 0, "rebuilt": [], "unrepairable": [],
                         "failed": [], "complete": True, "dry_run": args.dry_run})
            return EXIT_OK
        progress = Progress()
        with _ticker(out, lambda: {"packs_done": progress.done, "packs": progress.total},
                     lambda: ("repair", progress.done, progress.total or None, "packs")):
            res = meshops.repair(node, port, dry_run=args.dry_run, progress=progress)
        changed = [p for p, placed in res.placed.items() if placed] + (
            [] if args.dry_run else [r.pack for r in res.plan.rebuilds if not r.indexes])
        if changed and node.group.in_group:
            # Where the shares are now, for the members (the owner's partition).
            node.group.write(meshops.placement_items(node, changed))
            _group_round(args, node)
    plan = res.plan
    rebuilt = [{"pack": r.pack.hex(), "source": r.source, "shares": list(r.indexes),
                "placed": {str(i): peer for i, peer in res.placed.get(r.pack, {}).items()},
                "forgotten": [[i, peer] for i, peer in r.forget], "reasons": list(r.reasons)}
               for r in plan.rebuilds]
    code = EXIT_OK if res.complete or args.dry_run else EXIT_INCOMPLETE
    if out.json:
        out.obj({"type": "summary", "packs_full": plan.full, "rebuilt": rebuilt,
                 "unrepairable": [{"pack": u.pack.hex(), "good": u.good, "k": u.k, "reason": u.reason}
                                  for u in plan.unrepairable],
                 "failed": res.failed, "forgotten": res.forgotten, "complete": res.complete,
                 "pruned_shares_deleted": res.deletes_done, "pruned_shares_left": res.deletes_left,
                 "dry_run": args.dry_run, "seconds": round(res.seconds, 3)})
        return code
    from corestate.node.runtime.meshops import short
    verb = "would rebuild" if args.dry_run else "rebuilt"
    for r in plan.rebuilds:
        placed = res.placed.get(r.pack, {})
        if r.indexes:
            where = ", ".join(f"{i}->{short(p)}" for i, p in sorted(placed.items())) or "nothing placed"
            out.say(f"pack {r.pack.hex()[:12]}: {verb} share(s) {list(r.indexes)} from the {r.source} copy"
                    + ("" if args.dry_run else f" ({where})"))
        for why in r.reasons:
            out.say(f"    {why}")
    for u in plan.unrepairable:
        out.say(f"pack {u.pack.hex()[:12]}: CANNOT repair now: {u.reason}")
    for f in res.failed:
        out.warn(f)
    if res.deletes_done or res.deletes_left:
        out.say(f"{res.deletes_done} share(s) of pruned packs deleted on their holders"
                + (f"; {res.deletes_left} still wait for holders out of reach" if res.deletes_left else ""))
    todo = [r for r in plan.rebuilds if r.indexes]
    out.say(f"{plan.full} pack(s) full, {len(todo)} {'to repair' if args.dry_run else 'repaired'}, "
            f"{len(plan.unrepairable)} not repairable now" + ("" if args.dry_run else f" ({res.seconds:.1f}s)"))
    if not args.dry_run and not res.complete:
        out.say("some packs are still below full redundancy: "
                "bring holders back online or add trusted peers (`corestate peer add`), then repair again")
    return code


def _say_survey(out: Out, survey: Any) -> None:
    from corestate.node.runtime.meshops import short
    sh = survey.shares
    out.say("mesh: shares " + ", ".join(f"{sh.get(k, 0)} {k}" for k in ("ok", "missing", "corrupt", "unreachable")))
    for peer, problems in survey.bad_holders.items():
        out.warn(f"peer {short(peer)} ({peer}): {len(problems)} bad share(s), e.g. {problems[0]}")
    out.say(f"{'SNAPSHOT':<9} {'FULL':>6} {'DEGRADED':>9} {'AT-RISK':>8} {'LOCAL':>6}  (packs)")
    for snap, t in survey.per_snapshot:
        out.say(f"{snap.short_id:<9} {t['full']:>6} {t['degraded']:>9} {t['at-risk']:>8} {t['local-only']:>6}")


def cmd_forget(args: argparse.Namespace, out: Out) -> int:
    from datetime import datetime

    from corestate.node.core.retention import Policy, PolicyError, Snap, apply_policy
    from corestate.node.engine import prune as prunemod
    from corestate.node.home import parse_duration
    policy = Policy(last=args.keep_last, hourly=args.keep_hourly, daily=args.keep_daily,
                    weekly=args.keep_weekly, monthly=args.keep_monthly, yearly=args.keep_yearly,
                    within_s=parse_duration(args.keep_within) if args.keep_within else 0.0)
    if args.snapshots and not policy.empty():
        raise CoreStateError("give snapshots to forget or a keep-policy, not both")
    if not args.snapshots and policy.empty():
        raise CoreStateError("nothing says what to forget",
                             hint="name snapshots (`corestate forget 3f2a`), or give a policy such as "
                                  "`--keep-daily 7 --keep-weekly 4 --keep-monthly 12`")
    with _open(args, out) as node:
        snaps = node.repo.snapshots()
        reasons: dict[bytes, tuple[str, ...]] = {}
        if args.snapshots:
            gone = {node.repo.resolve(ref).id for ref in args.snapshots}
        else:
            try:
                verdicts = apply_policy([
                    Snap(s.id, datetime.fromtimestamp(s.record.time_ns / 1e9).astimezone(),
                         tuple(sorted(s.record.paths))) for s in snaps], policy)
            except PolicyError as exc:
                raise CoreStateError(str(exc))
            gone = {v.id for v in verdicts if not v.keep}
            reasons = {v.id: v.reasons for v in verdicts}
        plan = prunemod.plan(node.repo, gone, prune=args.prune, movable=_movable(node))
        deleted = _delete_packs(args, node, plan, gone) if not args.dry_run else None
    return _say_prune(args, out, snaps, gone, reasons, plan, deleted)


def cmd_prune(args: argparse.Namespace, out: Out) -> int:
    from corestate.node.engine import prune as prunemod
    with _open(args, out) as node:
        snaps = node.repo.snapshots()
        plan = prunemod.plan(node.repo, (), prune=True, movable=_movable(node))
        deleted = _delete_packs(args, node, plan, set()) if not args.dry_run else None
    return _say_prune(args, out, snaps, set(), {}, plan, deleted)


def _movable(node: LocalNode) -> Callable[[bytes], bool]:
    """Packs prune may repack: those that never left this machine."""
    store = node.repo.store
    has_local = getattr(store, "has_local", None)
    return lambda pid: node.ledger.get(pid) is None and (has_local is None or bool(has_local(pid)))


def _delete_packs(args: argparse.Namespace, node: LocalNode, plan: Any,
                  gone: set[bytes]) -> tuple[int, list[str]]:
    """Carry out a prune plan: repack first (the needed blobs durable in new packs), then
    delete packs everywhere: ledger, local store and index first (so nothing can point
    at them), then the shares on their holders (a holder out of reach keeps its copy)."""
    from corestate.node.engine import prune as prunemod
    if plan.repack:
        prunemod.repack(node.repo, plan.repack, plan.keep, pack_size=node.cfg.pack_size,
                        compression_level=node.cfg.compression_level)
    packs = plan.delete + plan.repack
    rows: list[tuple[bytes, int, str]] = []
    for pid in packs:
        c = node.ledger.get(pid)
        if c is not None:
            rows.extend((pid, r.index, r.peer) for r in c.shares)
    node.ledger.drop_packs(packs)
    prunemod.apply(node.repo, packs)
    result: tuple[int, list[str]] = (0, [])
    port = _port(args)
    if port is not None and (rows or node.ledger.doomed()):
        from corestate.node.runtime import meshops
        result = meshops.delete_shares(node, port, rows)
    elif rows:
        node.ledger.doom(rows)  # no way to the holders now: a later prune or repair asks them
    if node.group.in_group and (packs or gone):
        from corestate.node.core import catalog as cat
        from corestate.node.runtime import meshops
        own = node.group.own_entries()
        tomb: dict[bytes, bytes | None] = {}
        for key in [cat.snapshot_key(s) for s in gone] + [meshops.PACK_KEY + p for p in packs]:
            if own.get(key) is not None:
                tomb[key] = None
        node.group.write(tomb)
        _group_round(args, node)
    return result


def _say_prune(args: argparse.Namespace, out: Out, snaps: list[Any], gone: set[bytes],
               reasons: dict[bytes, tuple[str, ...]], plan: Any, deleted: tuple[int, list[str]] | None) -> int:
    dry = args.dry_run
    if out.json:
        out.obj({"type": "summary", "dry_run": dry,
                 "snapshots": [{"id": s.id.hex(), "keep": s.id not in gone, "reasons": list(reasons.get(s.id, ()))}
                               for s in snaps],
                 "forgotten": len(gone), "packs_deleted": len(plan.delete), "packs_repacked": len(plan.repack),
                 "bytes_freed": plan.delete_bytes + plan.repack_bytes,
                 "packs_kept": plan.kept, "packs_partly_used": plan.partly_used,
                 "unused_bytes_in_kept_packs": plan.unused_in_kept,
                 "shares_deleted": deleted[0] if deleted else 0,
                 "share_problems": deleted[1] if deleted else []})
        return EXIT_OK if not deleted or not deleted[1] else EXIT_INCOMPLETE
    for s in snaps:
        if reasons or s.id in gone:
            why = ", ".join(reasons.get(s.id, ())) or ("no rule keeps it" if reasons else "named")
            verb = "forget" if s.id in gone else "keep  "
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(s.record.time_ns / 1e9))
            out.say(f"{verb} {s.short_id}  {stamp}  {why}")
    would = "would " if dry else ""
    forgot = "" if args.command == "prune" else f"{would}forget {len(gone)} snapshot(s); "
    out.say(f"{forgot}{would}delete {len(plan.delete)} pack(s) and {would}repack {len(plan.repack)}, "
            f"freeing {_human(plan.delete_bytes + plan.repack_bytes)}")
    if plan.partly_used:
        out.say(f"  {plan.partly_used} pack(s) stay for the blobs still in use "
                f"({_human(plan.unused_in_kept)} in them is no longer needed: below the repack threshold, "
                "or on the mesh, where repacking is not done)")
    if deleted is not None and deleted[0]:
        out.say(f"  {deleted[0]} share(s) deleted on their holders")
    for prob in (deleted[1] if deleted else [])[:20]:
        out.warn(f"not deleted on its holder (it keeps the copy for now): {prob}")
    return EXIT_OK if not deleted or not deleted[1] else EXIT_INCOMPLETE


def cmd_stats(args: argparse.Namespace, out: Out) -> int:
    from corestate.node.engine.inspect import stats
    with _open(args, out) as node:
        s: dict[str, Any] = {**stats(node.repo), "peer_id": node.keys.peer_id}
    if out.json:
        out.obj(s)
        return EXIT_OK
    out.say(f"peer id        {s['peer_id']}")
    out.say(f"snapshots      {s['snapshots']}")
    out.say(f"store          {_human(s['store_bytes'])} in {s['packs']} packs")
    out.say(f"unique data    {_human(s['unique_bytes'])} in {s['chunks']} chunks, {s['trees']} trees")
    if s["latest_bytes"]:
        out.say(f"latest         {s['latest_files']} files, {_human(s['latest_bytes'])}")
        out.say(f"ratio          {s['store_bytes'] / max(1, s['unique_bytes']):.2f} stored/unique")
    return EXIT_OK


def cmd_node_run(args: argparse.Namespace, out: Out) -> int:
    import logging

    import trio
    from corestate.node.runtime.client import connect
    from corestate.node.runtime.daemon import run_daemon
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    home = Home(args.home)
    home.require()
    s = connect(home.path)
    if s is not None:
        s.close()
        from corestate.node.errors import HomeBusy
        raise HomeBusy(str(home.path), "the daemon answering on its control socket")
    passphrase = _passphrase(args)

    def ready(node: LocalNode, addrs: list[str]) -> None:
        # One line a script can wait for; the addresses are also in `node info`.
        out.say(f"ready {node.keys.peer_id} " + " ".join(addrs))
    return int(trio.run(lambda: run_daemon(home, passphrase, args.listen or None, ready=ready,
                                           hsm_module=args.hsm_module)))


def cmd_node_info(args: argparse.Namespace, out: Out) -> int:
    daemon = getattr(args, "daemon", None)
    if daemon is None:
        raise CoreStateError(f"no daemon runs for the home {Home(args.home).path}",
                             hint="start one with `corestate node run` (it runs in the foreground)")
    node, mesh = daemon.node, daemon.mesh
    addrs = mesh.host.addrs()
    vault = mesh.vault.stats()
    info = {"peer_id": node.keys.peer_id, "addrs": addrs, "home": str(node.home.path),
            "uptime_s": round(time.time() - daemon.started, 1),
            "connected": mesh.host.connected_peers(), "held_for_peers": vault}
    if out.json:
        out.obj(info)
        return EXIT_OK
    out.say(f"peer id   {info['peer_id']}")
    for a in addrs:
        out.say(f"address   {a}")
    out.say(f"home      {info['home']}")
    out.say(f"uptime    {info['uptime_s']:.0f}s, {len(info['connected'])} peer(s) connected")
    out.say(f"holding   {vault.get('shares', 0)} share(s), {_human(vault.get('bytes', 0))} for "
            f"{vault.get('senders', 0)} peer(s)")
    return EXIT_OK


def cmd_status(args: argparse.Namespace, out: Out) -> int:
    from corestate.node.runtime.client import call, connect
    from corestate.protocol import control as c
    s = connect(Path(args.home))
    if s is not None:
        with s:
            res = call(s, c.StatusCall())
        if not isinstance(res, c.StatusResult):
            raise CoreStateError(f"the daemon answered status with {res.TYPE}", hint="report this as a bug")
    else:
        from corestate.node.app.status import status
        with _open(args, out) as node:
            res = status(node, None)
    if out.json:
        out.obj(c.result_fields(res))
        return EXIT_OK
    _say_status(out, res)
    return EXIT_OK


def _say_status(out: Out, st: Any) -> None:
    from corestate.node.runtime.reports import short

    def when(ns: int | None) -> str:
        return "-" if ns is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ns / 1e9))
    out.say(f"node       {st.peer_id}" + ("" if st.daemon else "  (no daemon runs: `corestate node run`)"))
    if st.group:
        out.say(f"group      {st.group[:16]}")
    last = st.last_backup
    out.say(f"snapshots  {st.snapshots}; last {last.short_id + ' at ' + when(last.time_ns) if last else 'none yet'}")
    if st.daemon:
        out.say(f"next       {when(st.next_backup) if st.next_backup else 'no scheduled backup ([schedule] backup_every)'}")
    r = st.redundancy
    out.say(f"packs      {r.packs}: {r.full} full, {r.degraded} degraded, {r.at_risk} at risk, "
            f"{r.local} local only (as acknowledged at upload; `corestate check` asks the holders)")
    online = sum(1 for p in st.peers if p.online)
    out.say(f"peers      {len(st.peers)}" + (f", {online} online" if st.daemon else ""))
    for p in st.peers:
        state = "-" if p.online is None else ("online" if p.online else "offline")
        role = "member" if p.member else "trusted"
        out.say(f"  {short(p.peer_id):<10} {role:<8} {state:<8} {p.shares:>6} shares  seen {when(p.last_seen_ns)}")
    for a in st.alerts[-10:]:
        out.say(f"alert      {when(a.time_ns)} {a.severity}: {a.alert}: {a.message}")


def cmd_node_events(args: argparse.Namespace, out: Out) -> int:
    from corestate.node.runtime.client import connect, subscribe
    from corestate.protocol import control as c
    home = Home(args.home).path
    s = connect(home)
    if s is None:
        raise CoreStateError(f"no daemon runs for the home {home}",
                             hint="start one with `corestate node run` (it runs in the foreground)")
    with s, contextlib.suppress(KeyboardInterrupt):
        for ev in subscribe(s, tuple(args.topic or ())):
            if isinstance(ev, c.Missed):
                obj: dict[str, Any] = {"kind": "missed", "count": ev.count}
            else:
                obj = c.event_fields(ev)
            if out.json:
                out.obj(obj)
                continue
            t = time.strftime("%H:%M:%S", time.localtime(int(obj.get("time_ns", time.time_ns())) / 1e9))
            rest = " ".join(f"{k}={v}" for k, v in obj.items() if k not in ("kind", "time_ns"))
            out.say(f"{t} {obj['kind']:<18} {rest}")
        raise CoreStateError("the daemon stopped", hint="its log says why", retryable=True)
    return EXIT_OK


def cmd_peer_add(args: argparse.Namespace, out: Out) -> int:
    from corestate.node.peers import split_peer_addr
    peer, transport = split_peer_addr(args.addr)
    domains = [d for d in (args.domain or "").split("/") if d]
    with _open(args, out) as node:
        if peer == node.keys.peer_id:
            raise CoreStateError("that is this node's own address", hint="add the address of another node")
        node.book.add(peer, [transport] if transport else [], trusted=True, domains=domains or None)
        daemon = getattr(args, "daemon", None)
        reachable = None
        if daemon is not None:
            daemon.mesh.vault.set_quota(peer, node.cfg.quota_per_peer)
            from corestate.protocol import messages as m
            try:
                daemon.port().call(lambda mesh: mesh.request(peer, m.Capacity(), timeout=5.0))
                reachable = True
            except CoreStateError:
                reachable = False
    if out.json:
        out.obj({"peer": peer, "addrs": [transport] if transport else [], "trusted": True,
                 "domains": domains, "reachable": reachable})
        return EXIT_OK
    out.say(f"added peer {peer} (trusted: shares of this node may go there; it may store "
            f"shares here up to [mesh] quota_per_peer)")
    if reachable is True:
        out.say("  reachable now")
    elif reachable is False:
        out.say("  not reachable now; kept, and tried again at every backup")
    return EXIT_OK


def cmd_peer_remove(args: argparse.Namespace, out: Out) -> int:
    with _open(args, out) as node:
        entry = node.book.get(args.peer) or next(
            (e for e in node.book.all() if e.peer.endswith(args.peer)), None)
        if entry is None:
            raise CoreStateError(f"no peer {args.peer} in the address book", hint="`corestate peer list` shows them")
        node.book.remove(entry.peer)
        held = node.ledger.peers().get(entry.peer)
        daemon = getattr(args, "daemon", None)
        if daemon is not None:
            daemon.mesh.vault.set_quota(entry.peer, None)
    out.say(f"removed peer {entry.peer}")
    if held:
        out.warn(f"it still holds {held[0]} share(s) of this node; they count until the next "
                 "repair places them elsewhere")
    if out.json:
        out.obj({"removed": entry.peer})
    return EXIT_OK


def cmd_peer_list(args: argparse.Namespace, out: Out) -> int:
    from corestate.node.runtime.meshops import short
    with _open(args, out) as node:
        entries = node.book.all()
        held = node.ledger.peers()
        daemon = getattr(args, "daemon", None)
        connected = set(daemon.mesh.host.connected_peers()) if daemon is not None else None
        here = {p: daemon.mesh.vault.used(p) for p in (e.peer for e in entries)} if daemon is not None else {}
    rows = [{
        "peer": e.peer, "addrs": e.addrs, "trusted": e.trusted, "source": e.source,
        "domains": e.domains, "seen_ns": e.seen_ns,
        "connected": None if connected is None else e.peer in connected,
        "shares_held_for_us": held.get(e.peer, (0, 0))[0], "bytes_held_for_us": held.get(e.peer, (0, 0))[1],
        "bytes_we_hold": here.get(e.peer),
    } for e in entries]
    if out.json:
        out.obj(rows)
        return EXIT_OK
    if not rows:
        out.say("no peers yet: `corestate peer add /ip4/…/tcp/…/p2p/<id>` (see `corestate node info` on the other node)")
        return EXIT_OK
    out.say(f"{'PEER':<10} {'TRUST':<8} {'ONLINE':<7} {'SHARES':>7} {'HELD':>10}  ADDRESS")
    for r in rows:
        online = "-" if r["connected"] is None else ("yes" if r["connected"] else "no")
        trust = "trusted" if r["trusted"] else r["source"]
        out.say(f"{short(r['peer']):<10} {trust:<8} {online:<7} {r['shares_held_for_us']:>7} "
                f"{_human(r['bytes_held_for_us']):>10}  {(r['addrs'] or ['?'])[0]}")
    if connected is None:
        out.say("(online status: only a running daemon knows; `corestate node run`)")
    return EXIT_OK


def _members_table(out: Out, node: LocalNode) -> None:
    from corestate.node.runtime.reports import short
    st = node.group.state
    assert st is not None
    out.say(f"group {st.name} ({node.group.group.hex()[:16] if node.group.group else '?'})")
    for peer, role in sorted(st.members.items(), key=lambda x: (x[1] != "admin", x[0])):
        me = "  (this node)" if peer == node.keys.peer_id else ""
        out.say(f"  {role:<7} {short(peer)}  {peer}{me}")
    for peer in sorted(st.removed):
        out.say(f"  removed {short(peer)}  {peer}")


def _group_round(args: argparse.Namespace, node: LocalNode) -> None:
    """Tell the other members now (the daemon's anti-entropy would, within a minute)."""
    port = _port(args)
    if port is None or not node.group.in_group:
        return
    daemon = getattr(args, "daemon", None)
    if daemon is not None and daemon.mesh.groups is not None:
        daemon.mesh.groups.kick()
        return

    port.call(lambda mesh: mesh.groups.sync_all())


def cmd_group_create(args: argparse.Namespace, out: Out) -> int:
    with _open(args, out) as node:
        gid = node.group.create(args.name)
        if out.json:
            out.obj({"group": gid.hex(), "name": args.name, "admin": node.keys.peer_id})
            return EXIT_OK
        out.say(f"created group {args.name} ({gid.hex()[:16]}); this node is its first admin")
        out.say("invite machines with `corestate group invite` (the daemon must run: the token "
                "carries its address)")
    return EXIT_OK


def cmd_group_invite(args: argparse.Namespace, out: Out) -> int:
    from corestate.node.home import parse_duration
    daemon = getattr(args, "daemon", None)
    with _open(args, out) as node:
        if daemon is not None:
            addrs = daemon.mesh.host.addrs()
        else:
            addrs = [f"{a}/p2p/{node.keys.peer_id}" for a in node.cfg.listen if not a.endswith("/tcp/0")]
            if not addrs:
                raise CoreStateError("an invite carries this node's address, and no daemon runs to know it",
                                     hint="start `corestate node run` (or set [mesh] listen to a fixed port)")
        inv = node.group.invite("admin" if args.admin else "member", parse_duration(args.expires), addrs)
    if out.json:
        out.obj({"token": inv.token(), "role": inv.role, "expires_ms": inv.expires_ms})
        return EXIT_OK
    out.say(f"one-time invite for a new {inv.role}, valid for {args.expires}; on the new machine run")
    out.say("  corestate group join TOKEN      (TOKEN is the next line)")
    out.say(inv.token())
    return EXIT_OK


def cmd_group_join(args: argparse.Namespace, out: Out) -> int:
    from corestate.node.group import GroupError, Invite
    inv = Invite.parse(args.token)
    with _open(args, out) as node:
        if node.group.is_member(node.keys.peer_id):
            raise GroupError("this node is already in a group", hint="`corestate group leave` first")
        port = _port(args)
        assert port is not None
        port.call(lambda mesh: mesh.groups.join(inv))
        port.call(lambda mesh: mesh.groups.sync_with(inv.admin, list(inv.addrs)))
        _group_round(args, node)
        if node.keys.generation > 0 and not node.repo.snapshots():
            # A node back under a new identity (its old one removed, e.g. stolen): its
            # records of what it wrote while it belonged come back from the old partition.
            port.call(lambda mesh: mesh.groups.sync_with(inv.admin, list(inv.addrs)))
            rebuilt = _rebuild_from_partition(args, node, out)
            out.say(f"brought back {rebuilt['snapshots']} snapshot(s) of this node's earlier identity")
        if out.json:
            out.obj({"group": inv.group.hex(), "members": node.group.members()})
            return EXIT_OK
        out.say("joined; members now:")
        _members_table(out, node)
    return EXIT_OK


def cmd_group_members(args: argparse.Namespace, out: Out) -> int:
    with _open(args, out) as node:
        st = node.group.require()
        if out.json:
            out.obj({"group": node.group.group.hex() if node.group.group else None, "name": st.name,
                     "members": st.members, "removed": sorted(st.removed)})
            return EXIT_OK
        _members_table(out, node)
    return EXIT_OK


def _resolve_member(node: LocalNode, who: str) -> str:
    from corestate.node.group import GroupError
    st = node.group.require()
    hits = [p for p in st.members if p == who or p.endswith(who)]
    if len(hits) != 1:
        raise GroupError(f"{who!r} names {'no' if not hits else 'more than one'} member",
                         hint="`corestate group members` lists them; give the PeerID or its end")
    return hits[0]


def cmd_group_remove(args: argparse.Namespace, out: Out) -> int:
    with _open(args, out) as node:
        peer = _resolve_member(node, args.peer)
        node.group.remove(peer)
        _group_round(args, node)
    out.say(f"removed {peer}; every member refuses it once it learns of the removal")
    if out.json:
        out.obj({"removed": peer})
    return EXIT_OK


def cmd_group_leave(args: argparse.Namespace, out: Out) -> int:
    with _open(args, out) as node:
        op = node.group.leave()
        if op is not None:
            _group_round(args, node)
    if op is None:
        out.say("this node was not a member of the group it held; that group is dropped here")
    else:
        out.say("left the group")
    if out.json:
        out.obj({"left": op is not None, "dropped": op is None})
    return EXIT_OK


def cmd_group_sync(args: argparse.Namespace, out: Out) -> int:
    with _open(args, out) as node:
        node.group.require()
        port = _port(args)
        assert port is not None
        async def round_(mesh: Any) -> dict[str, str]:
            import trio
            await trio.to_thread.run_sync(mesh.groups.advertise)
            return cast("dict[str, str]", await mesh.groups.sync_all())
        results = port.call(round_)
        vector = node.group.catalog.version_vector()
    if out.json:
        out.obj({"peers": results, "vector": {a: list(v) for a, v in vector.items()}})
    else:
        for peer, r in sorted(results.items()):
            out.say(f"{peer[-8:]}  {r}")
    return EXIT_OK if all(r == "ok" for r in results.values()) else EXIT_INCOMPLETE


def cmd_demo(args: argparse.Namespace, out: Out) -> int:
    from corestate.node.demo import run_demo
    return run_demo(args, out)


# -- parser -----------------------------------------------------------------------------

EPILOG = """\
examples:
  corestate init                          create a node; shows the 24-word recovery phrase once
  corestate backup ~/Documents ~/src      back up two folders (excludes: --exclude '*.tmp')
  corestate snapshots                     list snapshots
  corestate status                        peers, last and next backup, redundancy, alerts
  corestate ls latest /home/me/src        list what a snapshot holds under a path
  corestate restore latest --target /tmp/r --path /home/me/src
  corestate check --read-data             read and verify every byte in the store
  corestate forget --keep-daily 7 --keep-weekly 4 --prune --dry-run
                                          what a retention policy would forget, and why
  corestate repair                        rebuild shares lost with dead or faulty peers
  corestate demo                          a guided run on a sample tree

The home is $CORESTATE_HOME or --home (default: %s). Commands that need the key read the
passphrase from --passphrase-file, $CORESTATE_PASSPHRASE, or the terminal.
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="corestate", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="CoreState: encrypted, deduplicated backups; a peer-to-peer backup mesh.",
        epilog=EPILOG % default_home(),
    )
    from corestate import __version__
    p.add_argument("--version", action="version", version=f"corestate {__version__}")
    p.add_argument("--home", type=Path, default=None, help="the node home (default: $CORESTATE_HOME, else the folder named below)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, fn: Callable, help: str, key: bool = True, json_flag: bool = True) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help)
        sp.set_defaults(fn=fn)
        if key:
            sp.add_argument("--passphrase-file", metavar="F", help="read the passphrase from the first line of F")
            if name != "init":
                _hsm_option(sp)
        if json_flag:
            sp.add_argument("--json", action="store_true", help="machine-readable output")
        return sp

    sp = add("init", cmd_init, "create a node home and its keys")
    sp.add_argument("--recover", action="store_true", help="rebuild the keys of an existing node from its phrase")
    sp.add_argument("--phrase-file", metavar="F", help="with --recover: read the 24 words from F")
    sp.add_argument("--hsm-module", metavar="LIB",
                    help="seal the key with a PKCS#11 token instead of a passphrase: the module "
                         "library (the passphrase is then the token's user PIN)")
    sp.add_argument("--hsm-token", metavar="LABEL", help="with --hsm-module: the token's label")
    sp.add_argument("--generation", type=int, default=0, metavar="G",
                    help="with --recover: use identity generation G (after this node's old identity was "
                         "removed from its group, e.g. a stolen laptop: recover with the next one, then "
                         "`group join` with a new invite; the data keys stay the same)")
    sp.add_argument("--peer", metavar="MULTIADDR",
                    help="with --recover: a group member's address; this node's records, snapshots "
                         "and share placements come back from the group")

    key = sub.add_parser("key", help="manage the node key")
    ksub = key.add_subparsers(dest="key_command", metavar="COMMAND")
    kp = ksub.add_parser("passwd", help="change the passphrase that seals the key")
    kp.set_defaults(fn=cmd_key_passwd)
    kp.add_argument("--passphrase-file", metavar="F", help="the current passphrase")
    kp.add_argument("--new-passphrase-file", metavar="F", help="the new passphrase")
    kp.add_argument("--json", action="store_true", help="machine-readable output")

    sp = add("backup", cmd_backup, "back up paths (or those in config.toml) into a new snapshot")
    sp.add_argument("paths", nargs="*", metavar="PATH", help="files or folders to back up")
    sp.add_argument("--exclude", action="append", metavar="PATTERN",
                    help="skip paths matching PATTERN (gitignore syntax, relative to each PATH); repeatable")
    sp.add_argument("-v", "--verbose", action="store_true", help="also list skipped special files")
    sp.add_argument("--k", type=int, default=0, metavar="K",
                    help="mesh: shares needed to rebuild a pack (default: [mesh] k, or ceil(n/2))")
    sp.add_argument("--n", type=int, default=0, metavar="N",
                    help="mesh: shares per pack, each on a different peer "
                         "(default: [mesh] n, or min(4, trusted peers online))")

    add("snapshots", cmd_snapshots, "list the snapshots")

    sp = add("ls", cmd_ls, "list the contents of a snapshot")
    sp.add_argument("snapshot", metavar="SNAP", help="snapshot id prefix, 'latest' or 'latest~N'")
    sp.add_argument("path", nargs="?", metavar="PATH", help="only below this path (as backed up)")
    sp.add_argument("-r", "--recursive", action="store_true", help="list PATH recursively")

    sp = add("restore", cmd_restore, "restore a snapshot (or chosen paths) below a target directory")
    sp.add_argument("snapshot", metavar="SNAP", help="snapshot id prefix, 'latest' or 'latest~N'")
    sp.add_argument("--target", required=True, metavar="DIR",
                    help="where to restore; each path comes back below DIR under its full original path")
    sp.add_argument("--path", action="append", metavar="P", help="restore only P (as backed up); repeatable")
    sp.add_argument("--dry-run", action="store_true", help="show what would be restored, write nothing")

    sp = add("diff", cmd_diff, "show what changed between two snapshots")
    sp.add_argument("a", metavar="SNAP1")
    sp.add_argument("b", metavar="SNAP2")

    sp = add("check", cmd_check, "verify the store; exits non-zero on any damage")
    sp.add_argument("--read-data", action="store_true", help="read, decrypt and hash every byte")
    sp.add_argument("--rebuild-index", action="store_true",
                    help="first rebuild the local index from the pack headers (after index damage)")

    sp = add("forget", cmd_forget, "forget snapshots, by name or by a keep-policy (--prune: free their space)")
    sp.add_argument("snapshots", nargs="*", metavar="SNAP", help="snapshots to forget (ids, prefixes, latest~N)")
    sp.add_argument("--keep-last", type=int, default=0, metavar="N", help="keep the N newest snapshots")
    for unit, period in (("hourly", "hours"), ("daily", "days"), ("weekly", "weeks"), ("monthly", "months"),
                         ("yearly", "years")):
        sp.add_argument(f"--keep-{unit}", type=int, default=0, metavar="N",
                        help=f"keep the newest snapshot of each of the N newest {period} that have one")
    sp.add_argument("--keep-within", metavar="DURATION", help="keep every snapshot this close to the newest (e.g. 2d)")
    sp.add_argument("--prune", action="store_true", help="then delete every pack no remaining snapshot needs")
    sp.add_argument("--dry-run", action="store_true", help="show what would go; change nothing")

    sp = add("prune", cmd_prune, "delete the packs no snapshot needs (left by forget or by an interrupted backup)")
    sp.add_argument("--dry-run", action="store_true", help="show what would go; change nothing")

    sp = add("repair", cmd_repair, "rebuild the shares of packs below full redundancy onto new holders")
    sp.add_argument("--dry-run", action="store_true", help="survey the holders and show the plan; change nothing")

    add("stats", cmd_stats, "sizes and counts of the store")

    nodep = sub.add_parser("node", help="run this node as a daemon, or ask the running one",
                           description="the node daemon: serves shares to peers, runs scheduled "
                                       "backups, and runs the commands of this CLI while it is up")
    nsub = nodep.add_subparsers(dest="node_command", metavar="COMMAND")
    np_ = nsub.add_parser("run", help="run the daemon in the foreground (logs to stderr; stop with Ctrl-C or SIGTERM)")
    np_.set_defaults(fn=cmd_node_run)
    np_.add_argument("--listen", action="append", metavar="MULTIADDR",
                     help="listen here, e.g. /ip4/0.0.0.0/tcp/4001 (repeatable; default: [mesh] listen, "
                          "else an ephemeral port on all interfaces)")
    np_.add_argument("--passphrase-file", metavar="F", help="read the passphrase from the first line of F")
    _hsm_option(np_)
    np_.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    np_.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    ni = nsub.add_parser("info", help="the running daemon's PeerID and listen addresses (fails if none runs)")
    ni.set_defaults(fn=cmd_node_info)
    ni.add_argument("--json", action="store_true", help="machine-readable output")
    ne = nsub.add_parser("events", help="follow the running daemon's events until Ctrl-C (one JSON "
                                        "object per line with --json)",
                         description="follow the running daemon's events: backup, restore, check and "
                                     "repair progress, peers up and down, group changes, alerts, "
                                     "the next scheduled runs")
    ne.set_defaults(fn=cmd_node_events)
    ne.add_argument("--topic", action="append", metavar="T",
                    help="only these kinds (repeatable): backup, restore, check, repair, retention, "
                         "peer, group, alert, schedule")
    ne.add_argument("--json", action="store_true", help="one JSON object per line, with a \"kind\"")

    peerp = sub.add_parser("peer", help="the peers this node trusts with its shares")
    psub = peerp.add_subparsers(dest="peer_command", metavar="COMMAND")
    pa = psub.add_parser("add", help="trust a peer: its address ends in /p2p/<peer id> (`corestate node info` there)")
    pa.set_defaults(fn=cmd_peer_add)
    pa.add_argument("addr", metavar="MULTIADDR")
    pa.add_argument("--domain", metavar="SITE/HOST",
                    help="failure-domain labels: shares of a pack spread over distinct sites, then hosts")
    pl = psub.add_parser("list", help="known peers: trusted ones and those seen on the LAN")
    pl.set_defaults(fn=cmd_peer_list)
    pr = psub.add_parser("remove", help="stop trusting a peer")
    pr.set_defaults(fn=cmd_peer_remove)
    pr.add_argument("peer", metavar="PEER", help="its PeerID (or the end of it, as `peer list` shows)")
    for spx in (pa, pl, pr):
        spx.add_argument("--passphrase-file", metavar="F", help="read the passphrase from the first line of F")
        _hsm_option(spx)
        spx.add_argument("--json", action="store_true", help="machine-readable output")

    groupp = sub.add_parser("group", help="a peer group: members with admins, a shared signed catalog",
                            description="groups: an admin creates one, invites machines, removes a stolen "
                                        "laptop; members hold each other's shares and replicate the catalog")
    gsub = groupp.add_subparsers(dest="group_command", metavar="COMMAND")
    g = gsub.add_parser("create", help="create a group; this node becomes its first admin")
    g.set_defaults(fn=cmd_group_create)
    g.add_argument("name")
    gi = gsub.add_parser("invite", help="a one-time invite token (printed alone on the last line)")
    gi.set_defaults(fn=cmd_group_invite)
    gi.add_argument("--admin", action="store_true", help="the new member is an admin")
    gi.add_argument("--expires", default="24h", metavar="DURATION", help="e.g. 30m, 24h, 7d (default 24h)")
    gj = gsub.add_parser("join", help="join with a token from `group invite` (redeemed at the issuing admin)")
    gj.set_defaults(fn=cmd_group_join)
    gj.add_argument("token")
    gm = gsub.add_parser("members", help="members, roles, removed identities")
    gm.set_defaults(fn=cmd_group_members)
    gr = gsub.add_parser("remove", help="remove a member for good (admins only); its streams are refused")
    gr.set_defaults(fn=cmd_group_remove)
    gr.add_argument("peer", metavar="PEER")
    gl = gsub.add_parser("leave", help="leave the group")
    gl.set_defaults(fn=cmd_group_leave)
    gs = gsub.add_parser("sync", help="sync the catalog with every member now")
    gs.set_defaults(fn=cmd_group_sync)
    for spx in (g, gi, gj, gm, gr, gl, gs):
        spx.add_argument("--passphrase-file", metavar="F", help="read the passphrase from the first line of F")
        _hsm_option(spx)
        spx.add_argument("--json", action="store_true", help="machine-readable output")

    add("status", cmd_status, "this node at a glance: peers, last and next backup, redundancy, alerts")

    sp = add("demo", cmd_demo, "a guided run: back up a sample tree, change it, restore and verify",
             key=False)
    sp.add_argument("--dir", type=Path, help="work in DIR instead of a temporary folder")
    sp.add_argument("--keep", action="store_true", help="keep the demo's files for you to explore")
    return p


def _hsm_option(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--hsm-module", metavar="LIB",
                    help="for a key sealed by a PKCS#11 token: load this module library instead of "
                         "the one the key file names (which is loaded only when it belongs to you "
                         "or root — to root alone when you are root — and nobody else can write it)")


# Commands a running daemon executes for the CLI; the others run here.
ROUTED = {"backup", "snapshots", "ls", "restore", "diff", "check", "repair", "forget", "prune", "stats", "peer", "node info", "group"}
# Commands that may need peers when run without a daemon (a transient host starts lazily).
NETWORKED = {"backup", "restore", "check", "repair", "forget", "prune", "peer add", "group join", "group remove", "group leave",
             "group sync", "init"}


def _command_name(args: argparse.Namespace) -> str:
    sub = (getattr(args, "node_command", None) or getattr(args, "peer_command", None)
           or getattr(args, "group_command", None))
    return f"{args.command} {sub}" if sub else args.command


def execute(args: argparse.Namespace, out: Out) -> int:
    """Run a parsed command; the one place errors become words and exit codes."""
    try:
        return int(args.fn(args, out))
    except CoreStateError as exc:
        out.error(f"error: {exc}")
        if exc.hint:
            out.error(f"hint: {exc.hint}")
        return EXIT_FAIL
    except OSError as exc:
        out.error(f"error: {exc.strerror or exc}: {exc.filename or ''}")
        return EXIT_FAIL


def _remote(args: argparse.Namespace, argv: list[str]) -> int | None:
    """Hand the command to the daemon of the home, if one runs; None otherwise."""
    from corestate.node.runtime.client import connect, run_remote
    s = connect(Path(args.home))
    if s is None:
        return None
    with s, _LazyBar() as bar:
        return run_remote(s, argv, os.getcwd(), bar.update if sys.stderr.isatty() else None)


class _LazyBar:
    """The client's progress bar, drawn only once the daemon reports progress."""

    def __init__(self) -> None:
        self._cm: Any = None
        self._update: Any = None

    def __enter__(self) -> _LazyBar:
        return self

    def update(self, label: str, done: int, total: int, unit: str) -> None:
        if self._update is None:
            self._cm = progress_bar()
            self._update = self._cm.__enter__()
        self._update(label, done, None if total < 0 else total, "")

    def __exit__(self, *exc: object) -> None:
        if self._cm is not None:
            self._cm.__exit__(None, None, None)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "fn", None):
        if args.command in ("node", "peer", "key", "group"):
            parser.parse_args([args.command, "--help"])  # prints that command's help, exits 0
        parser.print_help()
        return EXIT_USAGE
    if args.home is None:
        args.home = default_home()
    out = Out(getattr(args, "json", False))
    # The long-lived objects (caches, indexes, trees) are many and acyclic: scanning them
    # again and again in the cyclic collector costs seconds on large trees.
    import gc
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)
    name = _command_name(args)
    try:
        if name in ROUTED or args.command in ROUTED:
            code = _remote(args, list(sys.argv[1:] if argv is None else argv))
            if code is not None:
                return code
        if name in NETWORKED:
            from corestate.node.runtime.port import TransientMeshPort
            port = args.mesh_port = TransientMeshPort(lambda: getattr(args, "opened_node", None))
            try:
                return execute(args, out)
            finally:
                port.close()
        return execute(args, out)
    except KeyboardInterrupt:
        print("interrupted; what was stored so far is kept and reused next time", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
