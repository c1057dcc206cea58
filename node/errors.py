"""Errors of corestate.node; all derive from CoreStateError.

Each carries what a person needs to act (``hint``) and whether retrying can help. Only
the CLI turns them into words on a terminal.
"""

from __future__ import annotations

from corestate.errors import CoreStateError


class NodeError(CoreStateError):
    """Root of the errors raised by corestate.node."""


class HomeMissing(NodeError):
    def __init__(self, home: str) -> None:
        super().__init__(
            f"no node home at {home}",
            hint="run `corestate init` first, or point --home / CORESTATE_HOME at your home",
        )
        self.home = home


class HomeExists(NodeError):
    def __init__(self, home: str) -> None:
        super().__init__(
            f"a node home already exists at {home}",
            hint="use another --home, or `corestate init --recover` into an empty folder",
        )
        self.home = home


class HomeBusy(NodeError):
    retryable = True

    def __init__(self, home: str, holder: str) -> None:
        super().__init__(
            f"another corestate process ({holder}) is using {home}",
            hint="wait for it to finish, or stop it; two processes never write one home",
        )
        self.home = home


class PassphraseError(NodeError):
    """No passphrase available, or the one given does not unseal the key."""


class WrongPassphrase(PassphraseError):
    def __init__(self) -> None:
        super().__init__(
            "the passphrase does not unlock this node's key",
            hint="check --passphrase-file / CORESTATE_PASSPHRASE; if it is lost, recover "
            "the node from its 24-word phrase with `corestate init --recover`",
        )


class BadPhrase(NodeError):
    def __init__(self, reason: str) -> None:
        super().__init__(
            f"the recovery phrase is not valid: {reason}",
            hint="the phrase is 24 English BIP-39 words separated by spaces, as shown at init",
        )


class ConfigError(NodeError):
    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}", hint="fix the config file and run again")
        self.path = path


class Cancelled(NodeError):
    """The operation was stopped at a safe point because its client asked (``Cancel``, a
    closed connection, Ctrl-C): nothing half-written, what landed is kept."""

    retryable = True

    def __init__(self, what: str = "the operation") -> None:
        super().__init__(f"{what} was cancelled",
                         hint="run it again; what was stored so far is kept")
        self.what = what


class StoreError(NodeError):
    """The pack store could not do what was asked."""


class StoreFull(StoreError):
    retryable = True

    def __init__(self, where: str) -> None:
        super().__init__(
            f"no space left on the device holding {where}",
            hint="free some space (or move the store to a bigger disk in config.toml) and "
            "run the backup again: packs already stored are kept and reused",
        )
        self.where = where


class PackMissing(StoreError):
    def __init__(self, pack_id: str) -> None:
        super().__init__(
            f"pack {pack_id} is not in the store",
            hint="run `corestate check` to see what it affects",
        )
        self.pack_id = pack_id


class SnapshotNotFound(NodeError):
    def __init__(self, ref: str, reason: str = "no such snapshot") -> None:
        super().__init__(f"{ref}: {reason}", hint="`corestate snapshots` lists the snapshots")
        self.ref = ref


class PathNotInSnapshot(NodeError):
    def __init__(self, path: str) -> None:
        super().__init__(f"{path} is not in the snapshot", hint="`corestate ls SNAP` shows what is")
        self.path = path


class RestoreTargetError(NodeError):
    def __init__(self, target: str, reason: str) -> None:
        super().__init__(f"cannot restore into {target}: {reason}",
                         hint="choose an empty or existing directory you can write")
        self.target = target


class ShareNotFound(NodeError):
    """This node holds no such share for that sender (never stored, deleted, or rotten)."""

    retryable = False

    def __init__(self, pack: bytes, index: int, reason: str = "not held here") -> None:
        super().__init__(
            f"share {index} of pack {bytes(pack).hex()[:16]}: {reason}",
            hint="ask another holder of the pack; a repair rebuilds missing shares",
        )
        self.pack = bytes(pack)
        self.index = index
        self.reason = reason


class QuotaExceeded(NodeError):
    """Storing the share would take the sender over its quota (or the shared pool's)."""

    retryable = False

    def __init__(self, sender: str, needed: int, left: int) -> None:
        super().__init__(
            f"quota exceeded for {sender}: the share needs {needed} bytes, {left} bytes are left",
            hint="place the share on another peer, delete shares held there, or ask its owner "
            "to give you a quota of your own (trusted members get one)",
        )
        self.sender = sender
        self.needed = needed
        self.left = left


class ShareRejected(NodeError):
    """A share offered for storage failed verification; nothing was written."""

    retryable = False

    def __init__(self, pack: bytes, index: int, reason: str) -> None:
        super().__init__(
            f"share {index} of pack {bytes(pack).hex()[:16]} rejected: {reason}",
            hint="the sender's copy is corrupt or mislabelled: rebuild the share and send it again",
        )
        self.pack = bytes(pack)
        self.index = index
        self.reason = reason


class CatalogError(NodeError):
    """Root of the errors of the signed catalog (node.core.catalog, node.core.sync)."""


class BadBatch(CatalogError):
    """Bytes that are not the canonical encoding of a valid catalog batch (or sync message).

    Never retryable: the same bytes give the same answer. A peer that sends them is
    misbehaving or runs an incompatible version.
    """

    retryable = False

    def __init__(self, reason: str) -> None:
        super().__init__(
            f"malformed catalog data: {reason}",
            hint="the peer that sent it runs an incompatible or broken version",
        )
        self.reason = reason


class CatalogWriteError(CatalogError):
    """This node was asked to write a batch it must not write (a bug here, not a peer's)."""

    retryable = False

    def __init__(self, reason: str) -> None:
        super().__init__(f"cannot write the catalog batch: {reason}")
        self.reason = reason


class BadValue(CatalogError):
    """A sealed catalog value does not open under this key, author and catalog key."""

    retryable = False

    def __init__(self, key: bytes, reason: str) -> None:
        super().__init__(
            f"catalog value of key {bytes(key)[:40].hex()}: {reason}",
            hint="the value was sealed by another node's root, or it is corrupt",
        )
        self.key = bytes(key)
        self.reason = reason


class MembershipError(NodeError):
    """Root of the errors of group membership (node.core.membership)."""


class BadMemberOp(MembershipError):
    """Bytes or fields that are not a well-formed membership op.

    Never retryable: the same input gives the same answer. A peer that sends such an op is
    misbehaving or runs an incompatible version.
    """

    retryable = False

    def __init__(self, reason: str) -> None:
        super().__init__(
            f"malformed membership op: {reason}",
            hint="the peer that sent it runs an incompatible or broken version",
        )
        self.reason = reason


class AmbiguousGroup(MembershipError):
    """Membership ops of several groups (or none) were evaluated without naming the group."""

    retryable = False

    def __init__(self, groups: int) -> None:
        super().__init__(f"cannot tell which group to evaluate: the ops name {groups} groups")
        self.groups = groups


class SnapshotProtected(NodeError):
    """A snapshot an anomaly alert protects was named to be forgotten."""

    retryable = False

    def __init__(self, snapshot: str, alert_snapshot: str) -> None:
        super().__init__(
            f"snapshot {snapshot[:8]} is protected: it is the last one before the anomaly alert "
            f"on snapshot {alert_snapshot[:8]}, and that alert stands",
            hint=f"see why with `corestate anomaly explain {alert_snapshot[:8]}`; if the change was "
                 f"expected, `corestate anomaly ack {alert_snapshot[:8]}` lifts the protection",
        )
        self.snapshot, self.alert_snapshot = snapshot, alert_snapshot
