"""What mesh operations report: plain data, importable without trio or libp2p (the CLI
reads these for every backup, mesh or not)."""

from __future__ import annotations

from dataclasses import dataclass, field


def short(peer: str) -> str:
    """The end of a PeerID, as `peer list` shows it; a storage target by its name."""
    if peer.startswith("target:"):
        return peer
    return peer[-8:] if len(peer) > 8 else peer


@dataclass(slots=True)
class PackResult:
    pack: bytes
    k: int
    n: int
    placed: int  # distinct share indexes acknowledged
    failures: list[str] = field(default_factory=list)


@dataclass(slots=True)
class UploadReport:
    packs: list[PackResult] = field(default_factory=list)
    share_bytes: int = 0
    seconds: float = 0.0
    put_latencies: list[float] = field(default_factory=list)
    # Streaming uploads (Mesh.upload_stream): monotonic times of the first pack handed
    # over and of the last acknowledgement.
    first_put: float | None = None
    last_ack: float | None = None

    @property
    def degraded(self) -> list[PackResult]:
        return [p for p in self.packs if p.placed < p.n]


@dataclass(slots=True)
class Progress:
    done: int = 0
    total: int = 0
