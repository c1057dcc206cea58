"""The notification core (node/core/notify.py): which events notify, dedup, rate limit, overdue.

Pure: time is a parameter, so an hour or a week passes in one call.
"""

from __future__ import annotations

from corestate.node.core import notify as core
from corestate.protocol import control as c


def alert(name: str, **details: str) -> c.Alert:
    return c.Alert(time_ns=1, alert=name, severity="warning", message=f"{name} happened", details=details)


def finished(code: int) -> c.BackupFinished:
    return c.BackupFinished(time_ns=5, scheduled=True, snapshot_id="ab" * 32, code=code, files=3,
                            bytes_read=10, bytes_added=5, errors=1 if code else 0, seconds="1.000")


def test_each_kind_of_the_issue_comes_from_its_event_or_alert() -> None:
    got = [
        core.notice_of(c.BackupFailed(time_ns=1, scheduled=False, message="disk gone", hint="mount it")),
        core.notice_of(finished(3)),
        *(core.notice_of(alert(a)) for a in ("backup-overdue", "redundancy-low", "holder-evicted",
                                             "anomaly", "catalog-fork")),
    ]
    assert {n.kind for n in got if n is not None} == set(core.KINDS)
    failed = core.notice_of(c.BackupFailed(time_ns=1, scheduled=False, message="disk gone", hint="mount it"))
    assert failed is not None and failed.severity == "critical" and "mount it" in failed.message
    inc = core.notice_of(finished(3))
    assert inc is not None and inc.details["snapshot"] == "ab" * 32 and inc.details["code"] == "3"
    # Most events notify nobody: a complete backup, other alerts, progress.
    assert core.notice_of(finished(0)) is None
    assert core.notice_of(alert("clock-ahead")) is None
    assert core.notice_of(alert("anomaly-suspect")) is None
    assert core.notice_of(c.PeerUp(time_ns=1, peer_id="p")) is None


def test_an_alert_about_a_holder_is_deduplicated_per_holder() -> None:
    a = core.notice_of(alert("holder-evicted", peer="A"))
    b = core.notice_of(alert("holder-evicted", peer="B"))
    assert a is not None and b is not None and a.key != b.key
    p = core.Policy(repeat_after=3600, max_per_hour=100)
    assert p.decide(a, 0).send and p.decide(b, 1).send
    again = p.decide(a, 600)
    assert not again.send and "sent 600s ago" in again.reason
    later = p.decide(a, 3601)  # repeat_after passed: a reminder, saying what was held back
    assert later.send and later.notice.details["suppressed"] == "1"


def test_the_rate_limit_holds_a_storm_to_max_per_hour_and_counts_the_rest() -> None:
    p = core.Policy(repeat_after=0, max_per_hour=20)
    storm = [core.notice_of(alert("redundancy-low", pack=f"{i:064x}")) for i in range(1000)]
    sent = [d for i, n in enumerate(storm) if n is not None and (d := p.decide(n, i * 0.5)).send]
    assert len(sent) == 20  # 1000 distinct packs in 500 s: the first 20 only
    assert p.suppressed == 980
    held = p.decide(storm[0], 1000)  # type: ignore[arg-type]
    assert not held.send and "max_per_hour 20" in held.reason
    nxt = p.decide(storm[1], 3600.5)  # type: ignore[arg-type]  # the first went out an hour ago
    assert nxt.send and nxt.notice.details["suppressed"] == "981"
    assert p.suppressed == 0


def test_the_dedup_memory_stays_bounded() -> None:
    p = core.Policy(repeat_after=10, max_per_hour=10**9)
    for i in range(50_000):
        n = core.notice_of(alert("holder-evicted", peer=str(i)))
        assert n is not None and p.decide(n, float(i)).send
    assert len(p._last) <= core.MAX_KEYS


def test_overdue_after_twice_backup_every_once_per_stretch() -> None:
    w = core.OverdueWatch(every=3600, last_snapshot=1000.0, started=5000.0)
    assert w.deadline() == 1000 + 7200
    assert w.check(8199) is None
    n = w.check(8200)
    assert n is not None and n.kind == "backup.overdue" and "since the last snapshot" in n.message
    assert w.check(9000) is None and w.deadline() is None  # told once for this stretch
    w.snapshot_made(9500)
    assert w.deadline() == 9500 + 7200 and w.check(16699) is None
    assert w.check(16700) is not None


def test_overdue_counts_from_the_start_when_there_is_no_snapshot_and_never_without_a_schedule() -> None:
    w = core.OverdueWatch(every=60, last_snapshot=None, started=100.0)
    n = w.check(220)
    assert n is not None and "since the daemon started" in n.message
    off = core.OverdueWatch(every=0, last_snapshot=None, started=0.0)
    assert off.deadline() is None and off.check(10**9) is None


def test_a_failure_and_its_alert_are_one_notification_and_a_success_makes_the_next_news() -> None:
    p = core.Policy(repeat_after=6 * 3600, max_per_hour=100)
    ev = core.notice_of(c.BackupFailed(time_ns=1, scheduled=True, message="disk gone", hint=""))
    al = core.notice_of(alert("backup-failed", snapshot="x"))
    other = core.notice_of(c.BackupFailed(time_ns=2, scheduled=True, message="another reason", hint=""))
    assert ev is not None and al is not None and other is not None
    assert p.decide(ev, 0).send
    assert not p.decide(al, 1).send and not p.decide(other, 60).send
    p.resolve(core.resolved_by(finished(3)))  # incomplete resolves nothing
    assert not p.decide(ev, 120).send
    p.resolve(core.resolved_by(finished(0)))  # a complete backup: the next failure is news
    again = p.decide(ev, 180)
    assert again.send and again.notice.details["suppressed"] == "3"
    assert core.resolved_by(alert("holder-evicted", peer="A")) == ()
