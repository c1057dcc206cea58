"""Messages of the local control protocol: CLI and TUI to the daemon (SPEC.md §8.6).

The control socket is a Unix socket (mode 0600) carrying the same frames and the same
canonical CBOR maps as the share service; only the set of messages differs.

A connection opens with a handshake: the client sends ``Hello`` with the protocol version
it speaks, the daemon answers ``Welcome`` (or ``Failure`` of kind ``version``). Then the
client sends one request:

- a typed call, one message type per operation (``StatusCall``, ``BackupCall``, ...),
  answered by its typed result — or, for answers that can outgrow a frame, by pages of
  typed records and ``Done`` — with the operation's events on the way; or by a ``Failure``
  (kind, message, hint, whether retrying can help); while it runs the client may send
  ``Cancel`` (or hang up) to stop it at a safe point;
- ``Subscribe`` with topics, answered by ``Ok``, then typed events (one message type per
  event kind: ``backup.started``, ``alert``, ``peer.up``, ...) until the client hangs up.
  A subscriber that falls behind loses events, never the daemon's memory: it gets one
  ``Missed`` saying how many before the next event it does get.

This module is all the TUI needs to know of the daemon: it imports no trio, no libp2p and
no node code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, ClassVar

from corestate.protocol.messages import (
    INT64_MAX,
    Codec,
    Error,
    MaxItems,
    MaxLen,
    Message,
    Ok,
    Range,
    Record,
    encode,
    message,
    record,
)

CONTROL_VERSION = 2
# The largest control message (a BackupCall with 200 paths of 4096 bytes and 200 excludes
# of 1024, about 1.03 MB; a page stays under PAGE_BYTES) plus its envelope fits in this; use
# it as the control channel's max_frame.
CONTROL_MAX_FRAME = (1 << 20) + (16 << 10)


@message
@dataclass(frozen=True, slots=True)
class Subscribe(Message):
    """Turn this connection into an event stream of the kinds in ``topics`` (a topic is a
    kind's first word: ``backup`` for ``backup.progress``, or ``alert``); none = all."""

    TYPE: ClassVar[str] = "sub"
    topics: Annotated[tuple[Annotated[str, MaxLen(32)], ...], MaxItems(32)] = ()


# -- handshake and failures -----------------------------------------------------------------

Text = Annotated[str, MaxLen(4096)]
Name = Annotated[str, MaxLen(64)]
PeerId = Annotated[str, MaxLen(128)]
U63 = Annotated[int, Range(0, INT64_MAX)]
Count = Annotated[int, Range(-1, INT64_MAX)]  # -1 = unknown
TimeNs = Annotated[int, Range(0, INT64_MAX)]


@message
@dataclass(frozen=True, slots=True)
class Hello(Message):
    """The first message of every connection: the control protocol version the client speaks."""

    TYPE: ClassVar[str] = "hello"
    version: Annotated[int, Range(0, 65535)]
    client: Annotated[str, MaxLen(64)]  # e.g. "corestate-cli", "corestate-tui"


@message
@dataclass(frozen=True, slots=True)
class Welcome(Message):
    """The daemon speaks ``version`` too; it is node ``peer_id`` with home ``home``."""

    TYPE: ClassVar[str] = "welcome"
    version: Annotated[int, Range(0, 65535)]
    peer_id: PeerId
    home: Text


@message
@dataclass(frozen=True, slots=True)
class Failure(Message):
    """A request that did not succeed. ``kind`` is machine-readable (``version``,
    ``bad-request``, ``busy``, ``failed``, ...); ``hint`` says what to do."""

    TYPE: ClassVar[str] = "fail"
    kind: Name
    message: Text
    hint: Annotated[str, MaxLen(1024)]
    retryable: bool


@message
@dataclass(frozen=True, slots=True)
class Notice(Message):
    """Words for the calling client only, while its call is under way (``kind`` ``waiting``:
    another operation holds the command lock; this one starts when it ends)."""

    TYPE: ClassVar[str] = "notice"
    kind: Name
    message: Text


@message
@dataclass(frozen=True, slots=True)
class Cancel(Message):
    """From the client, while its call runs: stop it at the next safe point. The call is
    answered ``Failure`` of kind ``cancelled`` (a call still waiting for the command lock
    never starts). Closing the connection mid-call cancels it too."""

    TYPE: ClassVar[str] = "cancel"


@message
@dataclass(frozen=True, slots=True)
class Missed(Message):
    """``count`` events were dropped for this subscriber: it read too slowly."""

    TYPE: ClassVar[str] = "missed"
    count: U63


# -- status --------------------------------------------------------------------------------


@message
@dataclass(frozen=True, slots=True)
class StatusCall(Message):
    TYPE: ClassVar[str] = "status"


# Issue 17: how a peer is connected, and whether members reach this node from outside.
Connection = Annotated[str, MaxLen(16)]  # "direct" | "relayed" | "none"
Reachability = Annotated[str, MaxLen(16)]  # "public" | "private" | "unknown"


@record
@dataclass(frozen=True, slots=True)
class PeerStatus(Record):
    peer_id: PeerId
    online: bool | None  # None: no daemon runs, so nobody knows
    trusted: bool  # added by the user (shares go there)
    member: bool  # a member of this node's group
    last_seen_ns: TimeNs | None
    shares: U63  # shares of this node it holds
    connection: Connection = "none"  # direct, relayed (through a relay member), none


@record
@dataclass(frozen=True, slots=True)
class SnapshotRef(Record):
    snapshot_id: Annotated[str, MaxLen(64)]  # hex
    short_id: Annotated[str, MaxLen(16)]
    time_ns: TimeNs


@record
@dataclass(frozen=True, slots=True)
class Redundancy(Record):
    """This node's data packs by what the ledger last knew of their shares."""

    packs: U63
    full: U63  # every share acknowledged (or the pack is only local: see ``local``)
    degraded: U63  # at least k shares, fewer than n
    at_risk: U63  # fewer than k
    local: U63  # kept only in the local store (no peers, or not yet placed)
    # Of ``packs``: fewer than k share indexes on holders that count (lost and evicted
    # holders do not; node/core/health.py) and no local copy: cannot be restored now.
    lost: U63 = 0


@record
@dataclass(frozen=True, slots=True)
class AlertRecord(Record):
    time_ns: TimeNs
    alert: Name
    severity: Annotated[str, MaxLen(16)]
    message: Text
    acked: bool = False  # a person acknowledged it (AlertAckCall)
    details: Annotated[dict[Name, Annotated[str, MaxLen(1024)]], MaxItems(16)] = field(
        default_factory=dict)  # as in the Alert event (peer, pack, reasons, ...)


@message
@dataclass(frozen=True, slots=True)
class StatusResult(Message):
    TYPE: ClassVar[str] = "status-result"
    peer_id: PeerId
    daemon: bool
    group: Annotated[str, MaxLen(64)] | None  # group id (hex), None when not in a group
    peers: Annotated[tuple[PeerStatus, ...], MaxItems(4096)]
    last_backup: SnapshotRef | None
    next_backup: TimeNs | None
    snapshots: U63
    redundancy: Redundancy
    alerts: Annotated[tuple[AlertRecord, ...], MaxItems(64)]
    reachability: Reachability = "unknown"  # can members reach this node from outside its network


# -- answers in pages ------------------------------------------------------------------------
# An operation whose answer can be longer than a frame (a listing of a million files) sends
# it as pages of typed records, each page under PAGE_BYTES, then ``Done``.

PAGE_BYTES = 512 << 10
PathBytes = Annotated[bytes, MaxLen(65536)]  # a path as the file system has it (not always UTF-8)


@message
@dataclass(frozen=True, slots=True)
class Done(Message):
    """The end of a paged answer: ``items`` records were sent."""

    TYPE: ClassVar[str] = "done"
    items: U63


# -- snapshots, ls, diff, stats ---------------------------------------------------------------


@message
@dataclass(frozen=True, slots=True)
class SnapshotsCall(Message):
    TYPE: ClassVar[str] = "snapshots"


@record
@dataclass(frozen=True, slots=True)
class SnapshotSummary(Record):
    snapshot_id: Annotated[str, MaxLen(64)]  # hex
    short_id: Annotated[str, MaxLen(16)]
    time_ns: TimeNs
    host: Annotated[str, MaxLen(256)]
    paths: Annotated[tuple[PathBytes, ...], MaxItems(4096)]
    files: U63
    bytes: U63
    torn: U63
    errors: U63
    provider: Annotated[str, MaxLen(32)]
    # An anomaly alert that stands protects it: forget refuses it, retention keeps it.
    protected: bool = False
    # The anomaly model's verdict on the backup that made it (ok, suspect, alert); "" unjudged.
    verdict: Annotated[str, MaxLen(16)] = ""


@message
@dataclass(frozen=True, slots=True)
class SnapshotsPage(Message):
    TYPE: ClassVar[str] = "snapshots-page"
    snapshots: Annotated[tuple[SnapshotSummary, ...], MaxItems(4096)]


@message
@dataclass(frozen=True, slots=True)
class LsCall(Message):
    """What ``snapshot`` holds at ``path`` (b"" = everything): a file, or a folder's entries
    (all below it when ``recursive``)."""

    TYPE: ClassVar[str] = "ls"
    snapshot: Annotated[str, MaxLen(256)]  # an id prefix, latest, latest~N
    path: PathBytes
    recursive: bool


@record
@dataclass(frozen=True, slots=True)
class Entry(Record):
    path: PathBytes
    type: Annotated[str, MaxLen(1)]  # f d l p c b, as in protocol/objects.py
    mode: Annotated[int, Range(0, 0o7777)]
    uid: Annotated[int, Range(0, (1 << 32) - 1)]
    gid: Annotated[int, Range(0, (1 << 32) - 1)]
    mtime_ns: Annotated[int, Range(-INT64_MAX, INT64_MAX)]
    size: U63
    target: PathBytes | None  # a symlink's target


@message
@dataclass(frozen=True, slots=True)
class LsPage(Message):
    TYPE: ClassVar[str] = "ls-page"
    entries: Annotated[tuple[Entry, ...], MaxItems(4096)]


@message
@dataclass(frozen=True, slots=True)
class DiffCall(Message):
    TYPE: ClassVar[str] = "diff"
    a: Annotated[str, MaxLen(256)]
    b: Annotated[str, MaxLen(256)]


@record
@dataclass(frozen=True, slots=True)
class Change(Record):
    op: Annotated[str, MaxLen(1)]  # + added, - removed, M modified, T type changed
    path: PathBytes


@message
@dataclass(frozen=True, slots=True)
class DiffPage(Message):
    TYPE: ClassVar[str] = "diff-page"
    changes: Annotated[tuple[Change, ...], MaxItems(4096)]


@message
@dataclass(frozen=True, slots=True)
class StatsCall(Message):
    TYPE: ClassVar[str] = "stats"


@message
@dataclass(frozen=True, slots=True)
class StatsResult(Message):
    TYPE: ClassVar[str] = "stats-result"
    peer_id: PeerId
    snapshots: U63
    packs: U63
    store_bytes: U63
    chunks: U63
    trees: U63
    unique_bytes: U63
    latest_files: U63
    latest_bytes: U63


# -- backup and restore ----------------------------------------------------------------------
# (calls, results and records of node/app/backup.py and node/app/restore.py)
#
# Both answers are paged: the paths that could not be read (or were torn, or skipped), the
# packs left short of shares, the restore's failures — as many as there are — then one
# summary record, always the last. Paths in calls are absolute (the client made them so
# against its own working folder); a request fits one control frame (the field limits
# below add up to less than CONTROL_MAX_FRAME).

MAX_CALL_PATHS = 200
CallPath = Annotated[bytes, MaxLen(4096)]  # PATH_MAX
Int64 = Annotated[int, Range(-INT64_MAX, INT64_MAX)]
Seconds = Annotated[str, MaxLen(32)]  # decimal, e.g. "12.345678901" (no floats on the wire)


@message
@dataclass(frozen=True, slots=True)
class BackupCall(Message):
    """A new snapshot of ``paths`` (none: the configured ``[backup] paths``), then its packs
    out to the mesh and into the catalog."""

    TYPE: ClassVar[str] = "backup"
    paths: Annotated[tuple[CallPath, ...], MaxItems(MAX_CALL_PATHS)]  # absolute
    exclude: Annotated[tuple[Annotated[str, MaxLen(1024)], ...], MaxItems(200)]  # besides the config's
    k: Annotated[int, Range(0, 255)]  # 0: the config's, else ceil(n/2)
    n: Annotated[int, Range(0, 255)]  # 0: the config's, else min(4, trusted peers online)
    estimate: bool  # count files and bytes first, for an ETA (a person watches a terminal)
    skipped: bool  # also list what was skipped on purpose (special files)


@record
@dataclass(frozen=True, slots=True)
class BackupIssue(Record):
    """A path that did not make it into the snapshot as it is on disk."""

    kind: Annotated[str, MaxLen(16)]  # "error" (not backed up), "torn" (changed while read), "skipped"
    path: PathBytes
    message: Text


@record
@dataclass(frozen=True, slots=True)
class DegradedPack(Record):
    """A pack with fewer than n shares acknowledged (its local copy is kept)."""

    pack: Annotated[bytes, MaxLen(32)]
    placed: Annotated[int, Range(0, 255)]
    k: Annotated[int, Range(0, 255)]
    n: Annotated[int, Range(0, 255)]


@record
@dataclass(frozen=True, slots=True)
class JournalUse(Record):
    used: bool  # True: only what the change journal named was listed
    detail: Text  # how many paths changed, or why the whole tree was walked


@record
@dataclass(frozen=True, slots=True)
class PushSummary(Record):
    """Where the new packs went (a node with trusted peers)."""

    k: Int64  # as chosen; as asked or configured when no peer was online to choose with
    n: Int64
    online: Annotated[tuple[PeerId, ...], MaxItems(4096)]
    offline: Annotated[tuple[PeerId, ...], MaxItems(4096)]
    uploaded: U63  # packs coded and sent
    dropped_local: U63  # local copies dropped (all n shares acknowledged)
    share_bytes: U63
    seconds: Seconds | None  # None: nothing was sent (no peer online)
    degraded: U63  # DegradedPack records sent before the summary
    problems: Annotated[tuple[Text, ...], MaxItems(64)]
    safe: bool  # every pack has all its shares on peers


@record
@dataclass(frozen=True, slots=True)
class AnomalyVerdict(Record):
    """The anomaly model's verdict on one backup (issue 14; the rest of it is in the
    ``anomaly`` section below). Defined here because ``BackupSummary`` holds it."""

    verdict: Annotated[str, MaxLen(16)]  # ok, suspect, alert
    score: Annotated[str, MaxLen(32)]  # decimal, e.g. "0.873" (no floats on the wire)
    reasons: Annotated[tuple[Annotated[str, MaxLen(1024)], ...], MaxItems(32)]


@record
@dataclass(frozen=True, slots=True)
class BackupSummary(Record):
    """The last record of a backup's answer."""

    snapshot_id: Annotated[str, MaxLen(64)]  # hex
    provider: Annotated[str, MaxLen(32)]  # btrfs, reflink, plain
    code: Annotated[int, Range(0, 255)]  # 0 done and safe, 3 done but incomplete
    files: U63
    dirs: U63
    files_unchanged: U63
    bytes_total: U63
    bytes_read: U63
    bytes_added: U63
    chunks_new: U63
    bytes_new: U63
    paths_visited: U63
    errors: U63  # BackupIssue records of kind "error" sent before
    torn: U63  # ... of kind "torn"
    journal: JournalUse | None  # None: no change journal offered
    seconds: Seconds
    mesh: PushSummary | None  # None: a standalone node
    anomaly: AnomalyVerdict | None = None  # None: the model did not run (its state unusable)
    # Files whose content changed under an unchanged size and mtime (BackupIssue records
    # of kind "silent-corruption" sent before), and how many cache hits were re-read.
    silent_corruption: U63 = 0
    resampled: U63 = 0


@message
@dataclass(frozen=True, slots=True)
class BackupPage(Message):
    TYPE: ClassVar[str] = "backup-page"
    items: Annotated[tuple[BackupIssue | DegradedPack | BackupSummary, ...], MaxItems(4096)]


@message
@dataclass(frozen=True, slots=True)
class RestoreCall(Message):
    """Write ``snapshot`` (or only ``paths`` of it, as backed up) below ``target``, fetching
    from peers what lives only there."""

    TYPE: ClassVar[str] = "restore"
    snapshot: Annotated[str, MaxLen(256)]  # an id prefix, latest, latest~N
    target: CallPath  # absolute
    paths: Annotated[tuple[CallPath, ...], MaxItems(MAX_CALL_PATHS)]
    dry_run: bool  # count what would be written, write nothing


@record
@dataclass(frozen=True, slots=True)
class RestoreIssue(Record):
    path: PathBytes
    message: Text


@record
@dataclass(frozen=True, slots=True)
class RestoreSummary(Record):
    """The last record of a restore's answer."""

    snapshot_id: Annotated[str, MaxLen(64)]
    short_id: Annotated[str, MaxLen(16)]
    target: CallPath
    code: Annotated[int, Range(0, 255)]  # 0 every path restored, 1 some failed
    files: U63
    dirs: U63
    other: U63  # links and special files
    bytes: U63
    errors: U63  # RestoreIssue records sent before
    dry_run: bool
    seconds: Seconds


@message
@dataclass(frozen=True, slots=True)
class RestorePage(Message):
    TYPE: ClassVar[str] = "restore-page"
    items: Annotated[tuple[RestoreIssue | RestoreSummary, ...], MaxItems(4096)]


BACKUP_MESSAGES: tuple[type[Message], ...] = (BackupCall, BackupPage, RestoreCall, RestorePage)


# -- check, repair, forget, prune ------------------------------------------------------------
# (calls, results and records of node/app/maintain.py)
# Each answers in pages (its records can be many: damaged objects, rebuilt packs, snapshot
# verdicts); the page holds records of several kinds, told apart by their fields, and the
# summary record comes last, just before ``Done``.

Id = Annotated[bytes, MaxLen(64)]  # a pack, blob or snapshot id (32 bytes today)
HexId = Annotated[str, MaxLen(128)]
ShortId = Annotated[str, MaxLen(16)]
Keep = Annotated[int, Range(-(1 << 31), 1 << 31)]  # a keep-rule's count (the core refuses < 0)


@message
@dataclass(frozen=True, slots=True)
class CheckCall(Message):
    """Verify the store (every byte with ``read_data``); with ``rebuild_index`` first rebuild
    the index from the pack headers (fetching packs held only by peers for the time)."""

    TYPE: ClassVar[str] = "check"
    read_data: bool
    rebuild_index: bool


@record
@dataclass(frozen=True, slots=True)
class IndexProblem(Record):
    """A pack the index rebuild could not read."""

    pack: Id
    problem: Text


@record
@dataclass(frozen=True, slots=True)
class Damage(Record):
    """A damaged object and files it touches ("snapshot-id:/path"). A damage touching more
    files than one record holds goes on in further records with ``continued`` set."""

    what: Annotated[str, MaxLen(16)]  # pack, blob, tree, snapshot, index
    id: Id
    reason: Text
    files: Annotated[tuple[PathBytes, ...], MaxItems(4096)]
    continued: bool


@record
@dataclass(frozen=True, slots=True)
class SnapshotHealth(Record):
    """A snapshot's packs by what their holders just showed (the mesh survey)."""

    snapshot_id: HexId
    short_id: ShortId
    full: U63
    degraded: U63
    at_risk: U63
    local_only: U63


@record
@dataclass(frozen=True, slots=True)
class BadShare(Record):
    """A holder that lost or spoiled a share (the survey), one record per share."""

    peer: PeerId
    share: Text


@record
@dataclass(frozen=True, slots=True)
class CheckSummary(Record):
    code: Annotated[int, Range(0, 255)]  # 0 sound, 3 redundancy below full, 1 damage
    packs: U63
    blobs: U63
    snapshots: U63
    trees: U63
    bytes_read: U63
    remote: U63  # packs held only by peers (checked at their holders by the survey)
    index_packs: U63 | None  # the index was rebuilt from this many packs
    surveyed: bool  # the holders were asked (a mesh node)
    shares: Annotated[dict[Name, U63], MaxItems(16)]  # survey verdict -> shares
    healed: Annotated[tuple[Id, ...], MaxItems(65536)] = ()  # damaged local packs rebuilt from peers


CheckItem = CheckSummary | IndexProblem | Damage | SnapshotHealth | BadShare


@message
@dataclass(frozen=True, slots=True)
class CheckPage(Message):
    TYPE: ClassVar[str] = "check-page"
    items: Annotated[tuple[CheckItem, ...], MaxItems(4096)]


@message
@dataclass(frozen=True, slots=True)
class RepairCall(Message):
    """Rebuild the shares of packs below full redundancy onto new holders (``dry_run``:
    only say what would be done)."""

    TYPE: ClassVar[str] = "repair"
    dry_run: bool


ShareNo = Annotated[int, Range(0, 255)]


@record
@dataclass(frozen=True, slots=True)
class Rebuilt(Record):
    pack: Id
    source: Annotated[str, MaxLen(16)]  # local, mesh
    shares: Annotated[tuple[ShareNo, ...], MaxItems(256)]  # the indexes rebuilt
    placed: Annotated[tuple[tuple[ShareNo, PeerId], ...], MaxItems(256)]  # (index, new holder)
    forgotten: Annotated[tuple[tuple[ShareNo, PeerId], ...], MaxItems(1024)]  # rows dropped
    reasons: Annotated[tuple[Text, ...], MaxItems(256)]


@record
@dataclass(frozen=True, slots=True)
class Unrepairable(Record):
    pack: Id
    good: Annotated[int, Range(0, 255)]
    k: Annotated[int, Range(0, 255)]
    reason: Text


@record
@dataclass(frozen=True, slots=True)
class RepairFailure(Record):
    failed: Text


@record
@dataclass(frozen=True, slots=True)
class RepairSummary(Record):
    code: Annotated[int, Range(0, 255)]  # 0 every pack full (or a dry run), 3 some not
    on_mesh: bool  # False: no pack of this node is on the mesh, nothing was done
    dry_run: bool
    packs_full: U63
    complete: bool
    forgotten: U63
    shares_deleted: U63  # shares of pruned packs a holder deleted now
    shares_left: U63  # ... that still wait for holders out of reach
    seconds: Annotated[str, MaxLen(32)]  # decimal, e.g. "1.234"


RepairItem = RepairSummary | Rebuilt | Unrepairable | RepairFailure


@message
@dataclass(frozen=True, slots=True)
class RepairPage(Message):
    TYPE: ClassVar[str] = "repair-page"
    items: Annotated[tuple[RepairItem, ...], MaxItems(4096)]


@message
@dataclass(frozen=True, slots=True)
class ForgetCall(Message):
    """Forget ``snapshots`` (ids, prefixes, latest~N), or those no keep-rule keeps (one of
    the two); with ``prune``, then delete every pack no remaining snapshot needs."""

    TYPE: ClassVar[str] = "forget"
    snapshots: Annotated[tuple[Annotated[str, MaxLen(256)], ...], MaxItems(4096)]
    keep_last: Keep
    keep_hourly: Keep
    keep_daily: Keep
    keep_weekly: Keep
    keep_monthly: Keep
    keep_yearly: Keep
    keep_within: Annotated[str, MaxLen(64)]  # a duration ("2d", "3600s"); "" = none
    prune: bool
    dry_run: bool


@message
@dataclass(frozen=True, slots=True)
class PruneCall(Message):
    """Delete the packs no snapshot needs."""

    TYPE: ClassVar[str] = "prune"
    dry_run: bool


@record
@dataclass(frozen=True, slots=True)
class SnapshotVerdict(Record):
    snapshot_id: HexId
    short_id: ShortId
    time_ns: TimeNs
    keep: bool
    reasons: Annotated[tuple[Text, ...], MaxItems(64)]  # the keep-rules that keep it


@record
@dataclass(frozen=True, slots=True)
class ShareNotDeleted(Record):
    """A share of a deleted pack its holder did not delete (it keeps the copy for now)."""

    problem: Text


@record
@dataclass(frozen=True, slots=True)
class PruneSummary(Record):
    code: Annotated[int, Range(0, 255)]  # 0 done, 3 some holders keep shares for now
    dry_run: bool
    by_policy: bool  # the verdicts come from keep-rules (not from names)
    forgotten: U63
    packs_deleted: U63
    packs_repacked: U63
    bytes_freed: U63
    packs_kept: U63
    packs_partly_used: U63
    unused_bytes_in_kept_packs: U63
    shares_deleted: U63


PruneItem = PruneSummary | SnapshotVerdict | ShareNotDeleted


@message
@dataclass(frozen=True, slots=True)
class PrunePage(Message):
    """The answer to ForgetCall and PruneCall."""

    TYPE: ClassVar[str] = "prune-page"
    items: Annotated[tuple[PruneItem, ...], MaxItems(4096)]


@message
@dataclass(frozen=True, slots=True)
class CheckProgress(Message):
    TYPE: ClassVar[str] = "check.progress"
    time_ns: TimeNs
    packs_done: U63
    packs: U63


@message
@dataclass(frozen=True, slots=True)
class RepairProgress(Message):
    TYPE: ClassVar[str] = "repair.progress"
    time_ns: TimeNs
    packs_done: U63
    packs: U63


MAINTAIN_MESSAGES: tuple[type[Message], ...] = (
    CheckCall, CheckPage, RepairCall, RepairPage, ForgetCall, PruneCall, PrunePage,
)
MAINTAIN_EVENTS: tuple[type[Message], ...] = (CheckProgress, RepairProgress)


# -- keys, peers, groups, node info ----------------------------------------------------------
# (calls, results and records of node/app/members.py; ``init`` and ``key passwd`` are not
# calls: they run without a daemon, see node/app/keys.py)

Addr = Annotated[str, MaxLen(4096)]  # a multiaddr, as typed or as the address book keeps it
Domain = Annotated[str, MaxLen(1024)]  # a failure-domain label (site, host)


@message
@dataclass(frozen=True, slots=True)
class PeerAddCall(Message):
    """Trust the peer at ``addr`` (a multiaddr ending in /p2p/<peer id>)."""

    TYPE: ClassVar[str] = "peer-add"
    addr: Addr
    domains: Annotated[tuple[Domain, ...], MaxItems(64)] = ()  # most general first


@message
@dataclass(frozen=True, slots=True)
class PeerAddResult(Message):
    TYPE: ClassVar[str] = "peer-add-result"
    peer: PeerId
    addrs: Annotated[tuple[Addr, ...], MaxItems(1)]  # the transport given, without /p2p/
    trusted: bool
    domains: Annotated[tuple[Domain, ...], MaxItems(64)]
    reachable: bool | None  # None: no daemon runs, nobody tried


@message
@dataclass(frozen=True, slots=True)
class PeerRemoveCall(Message):
    TYPE: ClassVar[str] = "peer-remove"
    peer: Annotated[str, MaxLen(128)]  # a PeerID or its end


@message
@dataclass(frozen=True, slots=True)
class PeerRemoveResult(Message):
    TYPE: ClassVar[str] = "peer-remove-result"
    removed: PeerId
    shares_held: U63 | None  # shares of this node it still holds (None: it never held one)


@message
@dataclass(frozen=True, slots=True)
class PeerListCall(Message):
    TYPE: ClassVar[str] = "peer-list"


@record
@dataclass(frozen=True, slots=True)
class PeerRow(Record):
    peer: PeerId
    addrs: Annotated[tuple[Addr, ...], MaxItems(32)]  # dial order: pinned, then found
    trusted: bool
    source: Annotated[str, MaxLen(16)]  # user, mdns
    domains: Annotated[tuple[Domain, ...], MaxItems(64)]
    seen_ns: TimeNs
    connected: bool | None  # None: no daemon runs, so nobody knows
    shares_held_for_us: U63
    bytes_held_for_us: U63
    bytes_we_hold: U63 | None  # None: no daemon runs
    connection: Connection = "none"  # direct, relayed (through a relay member), none


@message
@dataclass(frozen=True, slots=True)
class PeerListPage(Message):
    TYPE: ClassVar[str] = "peer-list-page"
    peers: Annotated[tuple[PeerRow, ...], MaxItems(4096)]


@record
@dataclass(frozen=True, slots=True)
class Member(Record):
    peer_id: PeerId
    role: Annotated[str, MaxLen(16)]  # admin, member


@record
@dataclass(frozen=True, slots=True)
class GroupView(Record):
    """The group as this node evaluates it now."""

    group: Annotated[str, MaxLen(64)] | None  # group id (hex)
    name: Text | None  # None until the founding op is known
    members: Annotated[tuple[Member, ...], MaxItems(4096)]
    removed: Annotated[tuple[PeerId, ...], MaxItems(4096)]  # sorted
    me: PeerId  # this node


@record
@dataclass(frozen=True, slots=True)
class Recovered(Record):
    """What came back of this node's records from the group (a recovery, or a join under a
    new identity generation)."""

    snapshots: U63  # snapshots the repository lists now
    packs: U63  # placement records found
    found_snapshots: U63  # snapshot records found
    epoch: U63  # this node's new epoch
    problems: Annotated[tuple[Text, ...], MaxItems(4096)]  # packs that could not be read
    bytes_fetched: U63 = 0  # share bytes that crossed the wire for it (headers, metadata packs)


@message
@dataclass(frozen=True, slots=True)
class GroupCreateCall(Message):
    TYPE: ClassVar[str] = "group-create"
    name: Text  # the membership core bounds it (256 UTF-8 bytes)


@message
@dataclass(frozen=True, slots=True)
class GroupCreateResult(Message):
    TYPE: ClassVar[str] = "group-create-result"
    group: Annotated[str, MaxLen(64)]  # hex
    name: Text
    admin: PeerId


@message
@dataclass(frozen=True, slots=True)
class GroupInviteCall(Message):
    TYPE: ClassVar[str] = "group-invite"
    admin: bool  # the new member is an admin
    expires: Annotated[str, MaxLen(64)]  # a duration: 30m, 24h, 7d


@message
@dataclass(frozen=True, slots=True)
class GroupInviteResult(Message):
    """A one-time invite: ``token`` is a secret for the person who asked, never logged."""

    TYPE: ClassVar[str] = "group-invite-result"
    token: Annotated[str, MaxLen(65536)] = field(repr=False)
    role: Annotated[str, MaxLen(16)]
    expires_ms: Annotated[int, Range(-INT64_MAX, INT64_MAX)]


@message
@dataclass(frozen=True, slots=True)
class GroupJoinCall(Message):
    """Redeem an invite token (a secret: the daemon never logs it; not in the repr either)."""

    TYPE: ClassVar[str] = "group-join"
    token: Annotated[str, MaxLen(65536)] = field(repr=False)


@message
@dataclass(frozen=True, slots=True)
class GroupJoinResult(Message):
    TYPE: ClassVar[str] = "group-join-result"
    group: Annotated[str, MaxLen(64)]  # hex
    view: GroupView
    rebuilt: Recovered | None  # a node back under a new identity: its earlier records


@message
@dataclass(frozen=True, slots=True)
class GroupMembersCall(Message):
    TYPE: ClassVar[str] = "group-members"


@message
@dataclass(frozen=True, slots=True)
class GroupMembersResult(Message):
    TYPE: ClassVar[str] = "group-members-result"
    view: GroupView


@message
@dataclass(frozen=True, slots=True)
class GroupRemoveCall(Message):
    TYPE: ClassVar[str] = "group-remove"
    peer: Annotated[str, MaxLen(128)]  # a PeerID or its end


@message
@dataclass(frozen=True, slots=True)
class GroupRemoveResult(Message):
    TYPE: ClassVar[str] = "group-remove-result"
    removed: PeerId


@message
@dataclass(frozen=True, slots=True)
class GroupLeaveCall(Message):
    TYPE: ClassVar[str] = "group-leave"


@message
@dataclass(frozen=True, slots=True)
class GroupLeaveResult(Message):
    TYPE: ClassVar[str] = "group-leave-result"
    left: bool  # False: this node was no member of the group it held, which is dropped


@message
@dataclass(frozen=True, slots=True)
class GroupSyncCall(Message):
    TYPE: ClassVar[str] = "group-sync"


@record
@dataclass(frozen=True, slots=True)
class SyncOutcome(Record):
    peer_id: PeerId
    result: Text  # "ok", or why the exchange failed


@record
@dataclass(frozen=True, slots=True)
class VectorEntry(Record):
    author: PeerId
    epoch: U63
    seq: U63


@message
@dataclass(frozen=True, slots=True)
class GroupSyncResult(Message):
    TYPE: ClassVar[str] = "group-sync-result"
    peers: Annotated[tuple[SyncOutcome, ...], MaxItems(4096)]
    vector: Annotated[tuple[VectorEntry, ...], MaxItems(8192)]  # what this replica holds now


@message
@dataclass(frozen=True, slots=True)
class NodeInfoCall(Message):
    TYPE: ClassVar[str] = "node-info"


@record
@dataclass(frozen=True, slots=True)
class VaultStats(Record):
    """Shares this node holds for its peers."""

    shares: U63
    bytes: U63
    senders: U63


@message
@dataclass(frozen=True, slots=True)
class NodeInfoResult(Message):
    """The running daemon: who it is, where it listens, for how long."""

    TYPE: ClassVar[str] = "node-info-result"
    peer_id: PeerId
    addrs: Annotated[tuple[Addr, ...], MaxItems(64)]
    home: PathBytes
    uptime_ms: U63
    connected: Annotated[tuple[PeerId, ...], MaxItems(4096)]
    held_for_peers: VaultStats
    reachability: Reachability = "unknown"  # public, private (behind a NAT or firewall), unknown


MEMBER_MESSAGES: tuple[type[Message], ...] = (
    PeerAddCall, PeerAddResult, PeerRemoveCall, PeerRemoveResult, PeerListCall, PeerListPage,
    GroupCreateCall, GroupCreateResult, GroupInviteCall, GroupInviteResult,
    GroupJoinCall, GroupJoinResult, GroupMembersCall, GroupMembersResult,
    GroupRemoveCall, GroupRemoveResult, GroupLeaveCall, GroupLeaveResult,
    GroupSyncCall, GroupSyncResult, NodeInfoCall, NodeInfoResult,
)


# -- mount --
# ``corestate mount`` decrypts in its own process; what it cannot read from the local store
# (a pack that lives only on holders) it asks the daemon for, as ciphertext ranges.

PACK_READ_MAX = 1 << 20  # bytes of one PackReadCall (its answer fits CONTROL_MAX_FRAME)


@message
@dataclass(frozen=True, slots=True)
class PackReadCall(Message):
    """``length`` bytes at ``offset`` of a pack of this node (sealed, as stored), fetched
    from its holders when the pack is not in the local store."""

    TYPE: ClassVar[str] = "pack-read"
    pack: Annotated[bytes, MaxLen(32)]
    offset: U63
    length: Annotated[int, Range(0, PACK_READ_MAX)]


@message
@dataclass(frozen=True, slots=True)
class PackReadResult(Message):
    TYPE: ClassVar[str] = "pack-read-result"
    data: Annotated[bytes, MaxLen(PACK_READ_MAX)]
    fetched: bool  # the pack came from its holders (not the local store)


MOUNT_MESSAGES: tuple[type[Message], ...] = (PackReadCall, PackReadResult)


# -- alerts: acknowledge --------------------------------------------------------------------
# (answered by the daemon itself, like status: the recent alerts live in its memory only)


@record
@dataclass(frozen=True, slots=True)
class AlertKey(Record):
    """Names one alert: its time and name, as status lists it."""

    time_ns: TimeNs
    alert: Name


@message
@dataclass(frozen=True, slots=True)
class AlertAckCall(Message):
    """A person saw these alerts: status marks them ``acked`` (the TUI stops showing them as
    new). Keys of alerts the daemon no longer keeps are ignored."""

    TYPE: ClassVar[str] = "alert-ack"
    alerts: Annotated[tuple[AlertKey, ...], MaxItems(64)]


@message
@dataclass(frozen=True, slots=True)
class AlertAckResult(Message):
    TYPE: ClassVar[str] = "alert-ack-result"
    acked: U63  # how many of the keys named a recent alert


@message
@dataclass(frozen=True, slots=True)
class AlertAcked(Message):
    """Alerts were acknowledged (by any client): other screens update too."""

    TYPE: ClassVar[str] = "alert.acked"
    time_ns: TimeNs
    alerts: Annotated[tuple[AlertKey, ...], MaxItems(64)]


ALERTS_MESSAGES: tuple[type[Message], ...] = (AlertAckCall, AlertAckResult)
ALERTS_EVENTS: tuple[type[Message], ...] = (AlertAcked,)


# -- anomaly model and advice (issue 14) ------------------------------------------------------
# The model's verdicts on backups, the protection an alert gives the last snapshot before
# it, and the optimizer's advice from the node's own history. ``AnomalyVerdict`` (what a
# backup's summary carries) is defined above, with ``BackupSummary``.

Score = Annotated[str, MaxLen(32)]  # decimal (no floats on the wire)


@message
@dataclass(frozen=True, slots=True)
class AnomalyListCall(Message):
    """The model's findings, oldest first (``all``: the ``ok`` ones too)."""

    TYPE: ClassVar[str] = "anomaly-list"
    all: bool = False


@record
@dataclass(frozen=True, slots=True)
class AnomalyRow(Record):
    snapshot_id: HexId
    short_id: ShortId
    time_ns: TimeNs
    paths: Annotated[tuple[PathBytes, ...], MaxItems(256)]  # the series
    verdict: Annotated[str, MaxLen(16)]
    score: Score
    reasons: Annotated[tuple[Annotated[str, MaxLen(1024)], ...], MaxItems(32)]
    protects: HexId | None  # the snapshot this alert protects while it stands
    acked_ns: TimeNs | None  # when a person acknowledged it
    silent_corruption: U63  # files found changed under an unchanged stat


@message
@dataclass(frozen=True, slots=True)
class AnomalyListPage(Message):
    TYPE: ClassVar[str] = "anomaly-list-page"
    rows: Annotated[tuple[AnomalyRow, ...], MaxItems(4096)]


@message
@dataclass(frozen=True, slots=True)
class AnomalyExplainCall(Message):
    TYPE: ClassVar[str] = "anomaly-explain"
    snapshot: Annotated[str, MaxLen(256)]  # id, prefix, latest, latest~N


@record
@dataclass(frozen=True, slots=True)
class AnomalyNumber(Record):
    """One number behind a verdict: what it measures, its value, what is usual."""

    name: Annotated[str, MaxLen(128)]
    value: Annotated[str, MaxLen(64)]
    usual: Annotated[str, MaxLen(128)]  # "" when the model has no usual value for it


@record
@dataclass(frozen=True, slots=True)
class AnomalyFile(Record):
    """One of the files most responsible for a verdict, with what it showed."""

    path: PathBytes
    change: Annotated[str, MaxLen(16)]  # added, changed, deleted, renamed
    score: Score
    signals: Annotated[tuple[Annotated[str, MaxLen(64)], ...], MaxItems(16)]


@message
@dataclass(frozen=True, slots=True)
class AnomalyExplainResult(Message):
    TYPE: ClassVar[str] = "anomaly-explain-result"
    row: AnomalyRow
    numbers: Annotated[tuple[AnomalyNumber, ...], MaxItems(256)]
    files: Annotated[tuple[AnomalyFile, ...], MaxItems(64)]  # the files most responsible
    silent: Annotated[tuple[PathBytes, ...], MaxItems(64)]  # silent corruption found


@message
@dataclass(frozen=True, slots=True)
class AnomalyAckCall(Message):
    """An expected change: teach the baseline, lift the protection."""

    TYPE: ClassVar[str] = "anomaly-ack"
    snapshot: Annotated[str, MaxLen(256)]


@message
@dataclass(frozen=True, slots=True)
class AnomalyAckResult(Message):
    TYPE: ClassVar[str] = "anomaly-ack-result"
    snapshot_id: HexId
    verdict: Annotated[str, MaxLen(16)]
    unprotected: HexId | None  # the snapshot no longer protected
    learned: bool  # the baseline took this backup as usual
    already: bool  # acknowledged before: nothing changed


@message
@dataclass(frozen=True, slots=True)
class AdviseCall(Message):
    """The optimizer: ``schedule``, ``capacity`` or ``tiering``."""

    TYPE: ClassVar[str] = "advise"
    topic: Annotated[str, MaxLen(16)]
    quota: U63 = 0  # capacity: the quota to forecast against (0: the store's disk)


@message
@dataclass(frozen=True, slots=True)
class AdviseResult(Message):
    TYPE: ClassVar[str] = "advise-result"
    topic: Annotated[str, MaxLen(16)]
    advice: Annotated[tuple[Text, ...], MaxItems(32)]  # in words, most useful first
    columns: Annotated[tuple[Annotated[str, MaxLen(64)], ...], MaxItems(16)]
    rows: Annotated[tuple[Annotated[tuple[Annotated[str, MaxLen(128)], ...], MaxItems(16)], ...], MaxItems(512)]
    numbers: Annotated[dict[Name, Annotated[str, MaxLen(128)]], MaxItems(64)]


ANOMALY_MESSAGES: tuple[type[Message], ...] = (
    AnomalyListCall, AnomalyListPage, AnomalyExplainCall, AnomalyExplainResult,
    AnomalyAckCall, AnomalyAckResult, AdviseCall, AdviseResult,
)


# -- health --------------------------------------------------------------------------------
# `corestate health` (node/app/health.py): how safe the packs are over time, each holder's
# standing, what repair does; and the daemon's scheduled audit round.


@message
@dataclass(frozen=True, slots=True)
class HealthCall(Message):
    TYPE: ClassVar[str] = "health"


@record
@dataclass(frozen=True, slots=True)
class PackLevels(Record):
    """Packs by level (node/core/health.py): full, degraded (k < good < n), at risk (good ==
    k, or below k with a local copy), lost (below k, no local copy)."""

    full: U63
    degraded: U63
    at_risk: U63
    lost: U63


@record
@dataclass(frozen=True, slots=True)
class SnapshotLevels(Record):
    snapshot_id: Annotated[str, MaxLen(64)]  # hex
    short_id: Annotated[str, MaxLen(16)]
    packs: PackLevels


@record
@dataclass(frozen=True, slots=True)
class HolderHealth(Record):
    peer: PeerId
    state: Name  # ok, suspect, evicted, lost
    last_seen_ns: TimeNs | None  # its last answer (None: never asked yet)
    audits_passed: U63  # audit rounds (and repair surveys) it passed: every share asked checked
    audits_failed: U63  # ... it failed: some share missing, spoiled, or its proof wrong
    shares: U63  # shares of this node's packs it holds (ledger rows)
    score: Annotated[str, MaxLen(16)]  # audit score in [0, 1], decimal ("0.950")


@record
@dataclass(frozen=True, slots=True)
class RepairStatus(Record):
    running: bool  # a repair runs now
    packs: U63  # packs below full that can be repaired now
    shares: U63  # share indexes to rebuild
    bytes: U63  # bytes to move for that
    unrepairable: U63  # packs that wait for holders to return
    eta_s: U63 | None  # seconds to full redundancy (None: unknown)
    reason: Text
    last_ns: TimeNs | None  # when the last repair finished
    member_repairs: U63  # packs of absent owners this node repaired for them


@message
@dataclass(frozen=True, slots=True)
class HealthResult(Message):
    TYPE: ClassVar[str] = "health-result"
    packs: PackLevels
    snapshots: Annotated[tuple[SnapshotLevels, ...], MaxItems(4096)]
    holders: Annotated[tuple[HolderHealth, ...], MaxItems(4096)]
    repair: RepairStatus


@message
@dataclass(frozen=True, slots=True)
class AuditCall(Message):
    """One audit round now (what the daemon runs every ``[schedule] audit_every``)."""

    TYPE: ClassVar[str] = "audit-round"  # not "audit": the share service's AuditShare has it


@record
@dataclass(frozen=True, slots=True)
class HolderChange(Record):
    peer: PeerId
    old: Name
    new: Name
    reason: Text


@message
@dataclass(frozen=True, slots=True)
class AuditResult(Message):
    TYPE: ClassVar[str] = "audit-round-result"
    code: Annotated[int, Range(0, 255)]  # 0 all passed, 3 some failed or holders silent
    challenges: U63  # block and whole-share checks asked
    passed: U63
    failed: U63
    answered: U63  # holders that answered
    silent: U63  # holders that did not
    changes: Annotated[tuple[HolderChange, ...], MaxItems(4096)]


@message
@dataclass(frozen=True, slots=True)
class AuditFinished(Message):
    TYPE: ClassVar[str] = "audit.finished"
    time_ns: TimeNs
    scheduled: bool
    code: Annotated[int, Range(0, 255)]
    passed: U63
    failed: U63


@message
@dataclass(frozen=True, slots=True)
class MemberRepairCall(Message):
    """Repair the packs of group members that are away (node/app/rescue.py); the daemon
    runs it after its own scheduled repair."""

    TYPE: ClassVar[str] = "member-repair"


@message
@dataclass(frozen=True, slots=True)
class MemberRepairResult(Message):
    TYPE: ClassVar[str] = "member-repair-result"
    code: Annotated[int, Range(0, 255)]  # 0 done (or nothing to do), 3 some packs left short
    owners_away: Annotated[tuple[PeerId, ...], MaxItems(4096)]
    packs_repaired: U63  # by this member, under its lease
    packs_deferred: U63  # another member holds the lease
    shares_placed: U63
    problems: Annotated[tuple[Text, ...], MaxItems(4096)]


HEALTH_MESSAGES: tuple[type[Message], ...] = (HealthCall, HealthResult, AuditCall, AuditResult,
                                              MemberRepairCall, MemberRepairResult)
HEALTH_EVENTS: tuple[type[Message], ...] = (AuditFinished,)


# -- targets --
# `corestate target add|list|remove` (node/app/targets.py): S3-compatible buckets and local
# or mounted folders that hold shares like peers, named ``target:NAME`` as holders. A call
# never carries a secret: S3 credentials come from the environment of the process that
# opens the target, or from the AWS-format credentials file whose path is given.

TargetName = Annotated[str, MaxLen(32)]


@record
@dataclass(frozen=True, slots=True)
class TargetRow(Record):
    name: TargetName
    holder: Name  # "target:NAME", as health, placement and the ledger name it
    url: Text  # s3://BUCKET/PREFIX or file:///PATH
    endpoint: Text  # "" = AWS
    quota: U63  # bytes this node may keep there; 0 = no limit but the target's own
    credentials_file: Text  # "" = AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY
    profile: Name
    shares: U63  # shares of this node's packs on it, as the ledger records them
    bytes: U63  # ... and their bytes
    free: U63 | None  # bytes free there (a folder's disk); None: unknown (a bucket), or not checked
    reachable: bool | None  # the access check passed (write, read back, delete a probe); None: not checked
    error: Text = ""  # why the check failed ("" when it passed or did not run)
    error_kind: Name = ""  # the error's class: TargetAuthError, TargetMissing, TargetUnavailable, ...
    hint: Text = ""  # what to do about it


@message
@dataclass(frozen=True, slots=True)
class TargetAddCall(Message):
    """Add a target; unless ``check`` is false, prove access first (nothing is saved when
    that fails)."""

    TYPE: ClassVar[str] = "target-add"
    name: TargetName
    url: Text
    endpoint: Text = ""
    quota: U63 = 0
    credentials_file: Text = ""  # an absolute path (the CLI resolves a relative one)
    profile: Name = "default"
    check: bool = True


@message
@dataclass(frozen=True, slots=True)
class TargetAddResult(Message):
    TYPE: ClassVar[str] = "target-add-result"
    target: TargetRow


@message
@dataclass(frozen=True, slots=True)
class TargetListCall(Message):
    TYPE: ClassVar[str] = "target-list"
    check: bool = True  # prove each target's access now (in parallel, a few seconds each at most)


@message
@dataclass(frozen=True, slots=True)
class TargetListPage(Message):
    TYPE: ClassVar[str] = "target-list-page"
    targets: Annotated[tuple[TargetRow, ...], MaxItems(4096)]


@message
@dataclass(frozen=True, slots=True)
class TargetRemoveCall(Message):
    """Remove a target; refused while the ledger records shares on it, unless ``force``."""

    TYPE: ClassVar[str] = "target-remove"
    name: TargetName
    force: bool = False


@message
@dataclass(frozen=True, slots=True)
class TargetRemoveResult(Message):
    TYPE: ClassVar[str] = "target-remove-result"
    removed: TargetName
    shares: U63  # shares the ledger still records on it (with force: repair rebuilds them elsewhere)
    bytes: U63


TARGET_MESSAGES: tuple[type[Message], ...] = (
    TargetAddCall, TargetAddResult, TargetListCall, TargetListPage, TargetRemoveCall,
    TargetRemoveResult,
)


# -- events: one message type per kind; the type is the kind --------------------------------

SEVERITIES = ("info", "warning", "critical")


@message
@dataclass(frozen=True, slots=True)
class BackupStarted(Message):
    TYPE: ClassVar[str] = "backup.started"
    time_ns: TimeNs
    scheduled: bool
    paths: Annotated[tuple[Text, ...], MaxItems(256)]


@message
@dataclass(frozen=True, slots=True)
class BackupProgress(Message):
    """Sent when a phase starts, every second while it runs, and when it ends: ``files``
    (reading the paths: the byte counts move) then ``shares`` (a mesh node coding and
    placing packs: the pack counts move)."""

    TYPE: ClassVar[str] = "backup.progress"
    time_ns: TimeNs
    files: U63
    bytes_done: U63
    bytes_total: Count  # an estimate; -1 while unknown
    bytes_added: U63
    eta_s: Count  # -1 while unknown
    current: Text
    phase: Annotated[str, MaxLen(16)]  # "files", "shares"
    bytes_read: U63  # of files not in the caches
    packs_done: U63  # coded and placed
    packs_total: U63  # 0 while unknown


@message
@dataclass(frozen=True, slots=True)
class BackupFinished(Message):
    TYPE: ClassVar[str] = "backup.finished"
    time_ns: TimeNs
    scheduled: bool
    snapshot_id: Annotated[str, MaxLen(64)]
    code: Annotated[int, Range(0, 255)]  # 0 done and safe, 3 done but incomplete
    files: U63
    bytes_read: U63
    bytes_added: U63
    errors: U63
    seconds: Annotated[str, MaxLen(32)]  # decimal, e.g. "12.345" (no floats on the wire)


@message
@dataclass(frozen=True, slots=True)
class BackupFailed(Message):
    TYPE: ClassVar[str] = "backup.failed"
    time_ns: TimeNs
    scheduled: bool
    message: Text
    hint: Annotated[str, MaxLen(1024)]


@message
@dataclass(frozen=True, slots=True)
class RestoreStarted(Message):
    TYPE: ClassVar[str] = "restore.started"
    time_ns: TimeNs
    snapshot_id: Annotated[str, MaxLen(64)]
    target: Text


@message
@dataclass(frozen=True, slots=True)
class RestoreProgress(Message):
    """Sent when a phase starts, every second while it runs, and when it ends: ``fetch``
    (packs that live only on peers: the pack counts move), then ``write`` — or
    ``dry-run``, which alone has no restore.started nor restore.finished around it."""

    TYPE: ClassVar[str] = "restore.progress"
    time_ns: TimeNs
    files: U63
    files_total: U63
    bytes_done: U63
    bytes_total: U63
    eta_s: Count
    phase: Annotated[str, MaxLen(16)]  # "fetch", "write", "dry-run"
    packs_done: U63  # fetched
    packs_total: U63
    bytes_fetched: U63


@message
@dataclass(frozen=True, slots=True)
class RestoreFinished(Message):
    TYPE: ClassVar[str] = "restore.finished"
    time_ns: TimeNs
    snapshot_id: Annotated[str, MaxLen(64)]
    code: Annotated[int, Range(0, 255)]
    files: U63
    bytes: U63
    errors: U63


@message
@dataclass(frozen=True, slots=True)
class RestoreFailed(Message):
    TYPE: ClassVar[str] = "restore.failed"
    time_ns: TimeNs
    message: Text
    hint: Annotated[str, MaxLen(1024)]


@message
@dataclass(frozen=True, slots=True)
class CheckFinished(Message):
    TYPE: ClassVar[str] = "check.finished"
    time_ns: TimeNs
    code: Annotated[int, Range(0, 255)]  # 0 sound, 3 redundancy below full, 1 damage


@message
@dataclass(frozen=True, slots=True)
class RepairStarted(Message):
    TYPE: ClassVar[str] = "repair.started"
    time_ns: TimeNs
    scheduled: bool


@message
@dataclass(frozen=True, slots=True)
class RepairFinished(Message):
    TYPE: ClassVar[str] = "repair.finished"
    time_ns: TimeNs
    scheduled: bool
    code: Annotated[int, Range(0, 255)]  # 0 every pack full again


@message
@dataclass(frozen=True, slots=True)
class RetentionFinished(Message):
    TYPE: ClassVar[str] = "retention.finished"
    time_ns: TimeNs
    scheduled: bool
    code: Annotated[int, Range(0, 255)]


@message
@dataclass(frozen=True, slots=True)
class PeerUp(Message):
    TYPE: ClassVar[str] = "peer.up"
    time_ns: TimeNs
    peer_id: PeerId


@message
@dataclass(frozen=True, slots=True)
class PeerDown(Message):
    TYPE: ClassVar[str] = "peer.down"
    time_ns: TimeNs
    peer_id: PeerId


@message
@dataclass(frozen=True, slots=True)
class PeerDiscovered(Message):
    """A peer announced itself on the LAN (mDNS): listed, not trusted."""

    TYPE: ClassVar[str] = "peer.discovered"
    time_ns: TimeNs
    peer_id: PeerId
    addrs: Annotated[tuple[Annotated[str, MaxLen(256)], ...], MaxItems(8)]


@message
@dataclass(frozen=True, slots=True)
class GroupChanged(Message):
    TYPE: ClassVar[str] = "group.changed"
    time_ns: TimeNs
    group: Annotated[str, MaxLen(64)]  # group id (hex), "" when the node left
    members: U63
    reason: Text


@message
@dataclass(frozen=True, slots=True)
class Alert(Message):
    """Something a person should know. ``alert`` names what happened (``corrupt-share``,
    ``failed-audit``, ``catalog-fork``, ``clock-ahead``, ``redundancy-low``, ...: later
    work adds names, not shapes); ``details`` carries what it concerns (peer, pack, ...)."""

    TYPE: ClassVar[str] = "alert"
    time_ns: TimeNs
    alert: Name
    severity: Annotated[str, MaxLen(16)]  # one of SEVERITIES
    message: Text
    details: Annotated[dict[Name, Annotated[str, MaxLen(1024)]], MaxItems(16)]


@message
@dataclass(frozen=True, slots=True)
class ScheduleNext(Message):
    TYPE: ClassVar[str] = "schedule.next"
    time_ns: TimeNs
    job: Name  # backup, repair, audit
    at_ns: TimeNs | None  # None: not scheduled


EVENTS: tuple[type[Message], ...] = (
    BackupStarted, BackupProgress, BackupFinished, BackupFailed,
    RestoreStarted, RestoreProgress, RestoreFinished, RestoreFailed,
    CheckFinished, RepairStarted, RepairFinished, RetentionFinished,
    *MAINTAIN_EVENTS,
    *HEALTH_EVENTS,
    PeerUp, PeerDown, PeerDiscovered, GroupChanged, Alert, ScheduleNext,
    *ALERTS_EVENTS,
)
EVENT_KINDS = frozenset(e.TYPE for e in EVENTS)


def topic(kind: str) -> str:
    """The topic of an event kind: its first word (``backup`` for ``backup.progress``)."""
    return kind.split(".", 1)[0]


def event_fields(ev: Message) -> dict[str, object]:
    """An event as a flat JSON-ready object: ``{"kind": ..., <fields>}`` (records as maps)."""
    out: dict[str, object] = {"kind": ev.TYPE}
    for name in ev.SPECS:
        out[name] = _plain(getattr(ev, name))
    return out


def _plain(v: object) -> object:
    if isinstance(v, Record):
        return {name: _plain(getattr(v, name)) for name in v.SPECS}
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, bytes):
        return v.hex()
    return v


def result_fields(msg: Message) -> dict[str, object]:
    """A typed result as a JSON-ready object (records as maps, tuples as lists)."""
    return {name: _plain(getattr(msg, name)) for name in msg.SPECS}


CONTROL_MESSAGES: tuple[type[Message], ...] = (
    Hello,
    Welcome,
    Failure,
    Notice,
    Cancel,
    Subscribe,
    Missed,
    StatusCall,
    StatusResult,
    Done,
    SnapshotsCall,
    SnapshotsPage,
    LsCall,
    LsPage,
    DiffCall,
    DiffPage,
    StatsCall,
    StatsResult,
    *BACKUP_MESSAGES,
    *MAINTAIN_MESSAGES,
    *MEMBER_MESSAGES,
    *MOUNT_MESSAGES,
    *ALERTS_MESSAGES,
    *ANOMALY_MESSAGES,
    *HEALTH_MESSAGES,
    *TARGET_MESSAGES,
    *EVENTS,
    Ok,  # Ok and Error last: the share service's, listed here too
    Error,
)
# A status result nests: message -> peers -> peer -> value; an alert's details one less.
CONTROL_CODEC = Codec(CONTROL_MESSAGES, max_depth=6)


def decode(payload: bytes) -> Message:
    """Decode one control message; anything else raises RemoteProtocolError."""
    return CONTROL_CODEC.decode(payload)


# Re-exported: control messages are encoded like every other message.
__all__ = ["Error", "Message", "Ok", "decode", "encode"]
