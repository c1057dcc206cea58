"""The anomaly model's state in the home (node/anomalystate.py, ``HOME/anomaly.db``): a
backup's record keeps the same bounds as the whole-state rules, reads only its series, a
home of the older format (``anomaly.json``) keeps its baselines and findings, and damage
gives a clear message and a fresh start, never a crash."""

from __future__ import annotations

import base64
import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from corestate.node import anomalystate as st
from corestate.node.core import anomaly as an


def _finding(i: int, verdict: str = "ok", series: str = "/x", silent: bool = False) -> st.Finding:
    feats = {"added": float(i)}
    return st.Finding(
        snapshot=f"{i:064x}", time_ns=i, series=[series], verdict=verdict, score=0.01 * (i % 100),
        reasons=[f"reason {i}"], details={"n": [i] * 5}, files=[f"/x/f{i}"],
        protects=f"{i - 1:064x}" if verdict == "alert" and i else None, features=feats,
        silent=["/x/rot"] if silent else [], silent_digests={f"/x/rot{i}": "ab" * 16} if silent else {})


def _kind(i: int) -> str:
    return "alert" if i % 41 == 0 else "suspect" if i % 7 == 0 else "ok"


def _baseline_entry(rows: int) -> dict[str, object]:
    b = an.Baseline()
    for i in range(rows):
        b.learn(an.Features(changed=float(i % 9), added=2.0))
    return {"baseline": base64.b64encode(b.to_bytes()).decode(), "exts": ["txt", "png"]}


def test_each_backups_record_keeps_the_bounds_the_whole_state_keeps(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Past every bound (scaled down): the table after one ``record`` per backup holds what
    ``AnomalyState.add`` + ``compact`` keep in memory, finding for finding, numbers
    included; a standing alert is never dropped."""
    monkeypatch.setattr(st, "MAX_OK", 40)
    monkeypatch.setattr(st, "MAX_FINDINGS", 15)
    monkeypatch.setattr(st, "DETAILED", 6)
    mem = st.AnomalyState()
    db = st.AnomalyDB(tmp_path)
    try:
        for i in range(300):
            f = _finding(i, _kind(i), silent=i % 23 == 0)
            mem.add(_finding(i, _kind(i), silent=i % 23 == 0))
            db.record(f, st.key_of(f.series_key()), [str(i)])
    finally:
        db.close()
    mem.compact()
    got, problem = st.load(tmp_path)
    assert problem is None
    assert [x.snapshot for x in got.findings] == [x.snapshot for x in mem.findings]
    assert [st._row(x) for x in got.findings] == [st._row(x) for x in mem.findings]
    oks = [x for x in got.findings if x.verdict == "ok"]
    assert len(oks) == 40 and sum(1 for x in got.findings if x.verdict != "ok") == 15
    standing = [x for x in got.findings if x.standing]
    assert len(standing) == len(range(0, 300, 41))  # every alert stands, the oldest too
    assert set(got.protected()) == {x.protects for x in standing if x.protects}
    assert got.series == {st.key_of((b"/x",)): {"exts": ["299"]}}


def test_a_backup_reads_its_series_and_its_reported_corruption_only(tmp_path: Path) -> None:
    db = st.AnomalyDB(tmp_path)
    a, b = st.key_of((b"/a",)), st.key_of((b"/b",))
    db.record(_finding(1, series="/a", silent=True), a, ["a"], learnt={"added": 1.0}, baseline=b"blob-a")
    db.record(_finding(2, series="/b", silent=True), b, ["b"], learnt={"added": 2.0})
    db.record(_finding(3, series="/a"), a, ["a2"], learnt={"added": 3.0})
    assert db.series_model(a) == st.SeriesModel(b"blob-a", [{"added": 3.0}], ["a2"])
    assert db.series_model(b) == st.SeriesModel(None, [{"added": 2.0}], ["b"])
    assert db.series_model(st.key_of((b"/c",))) == st.SeriesModel()
    assert db.reported(a) == {"/x/rot1": "ab" * 16} and db.reported(b) == {"/x/rot2": "ab" * 16}
    db.close()


def test_an_older_homes_state_file_is_migrated_with_its_baseline_and_alerts(tmp_path: Path) -> None:
    """A node upgrading from the format-1 ``anomaly.json``: its baselines (a full ring),
    findings and standing alert come over; the file is kept aside; opening again imports
    nothing twice; a backup then goes on from the same baseline."""
    old = st.AnomalyState()
    for i in range(1, 120):
        old.add(_finding(i, _kind(i), silent=i == 50))
    key = st.key_of((b"/x",))
    old.series[key] = _baseline_entry(2000)
    (tmp_path / "anomaly.json").write_text(json.dumps(old.to_json()))
    # The older version's anomaly.db: probes and volumes only.
    with sqlite3.connect(tmp_path / "anomaly.db") as olddb:
        olddb.executescript("CREATE TABLE probes (path BLOB PRIMARY KEY, probe TEXT NOT NULL);"
                            "INSERT INTO probes VALUES (x'2f782f61', '[1]');")
    olddb.close()
    want = json.dumps(old.to_json(), sort_keys=True)
    got, problem = st.load(tmp_path)
    assert problem is None
    assert json.dumps(got.to_json(), sort_keys=True) == want
    assert got.protected() == old.protected() and got.protected()
    assert got.paused_series() == {(b"/x",)}
    assert not (tmp_path / "anomaly.json").exists() and (tmp_path / "anomaly.json.migrated").exists()
    # A crash between the commit and the rename: the file is back, nothing doubles.
    os.replace(tmp_path / "anomaly.json.migrated", tmp_path / "anomaly.json")
    again, problem = st.load(tmp_path)
    assert problem is None and json.dumps(again.to_json(), sort_keys=True) == want
    db = st.AnomalyDB(tmp_path)
    m = db.series_model(key)
    base = an.Baseline.from_bytes(m.baseline or b"")
    assert base.count == 2000 and m.pending == [] and m.exts == ["txt", "png"]
    assert db.get(b"/x/a") == [1]  # the older file's probes are kept and db.reported(key) == {"/x/rot50": "ab" * 16}
    db.close()


def test_a_damaged_older_state_file_says_so_and_starts_afresh(tmp_path: Path) -> None:
    (tmp_path / "anomaly.json").write_bytes(b'{"format": 1, "findings": [{"snapshot": 3')  # torn
    state, problem = st.load(tmp_path)
    assert state.findings == [] and problem is not None
    assert "anomaly.json is damaged" in problem and "fresh baseline" in problem
    assert (tmp_path / "anomaly.json.damaged").exists() and not (tmp_path / "anomaly.json").exists()


@pytest.mark.parametrize("damage", ["garbage", "torn pages"])
def test_a_damaged_database_is_set_aside_with_a_clear_message(tmp_path: Path, damage: str) -> None:
    db = st.AnomalyDB(tmp_path)
    for i in range(200):
        f = _finding(i, _kind(i))
        db.upserts.append((f"/x/f{i}".encode(), "[1,2,3]"))
        db.record(f, st.key_of(f.series_key()), ["txt"], baseline=base64.b64decode(str(_baseline_entry(20)["baseline"])))
    db.close()
    path = tmp_path / "anomaly.db"
    if damage == "garbage":
        path.write_bytes(os.urandom(4096))
    else:  # the header kept, the pages after it overwritten
        with open(path, "r+b") as fh:
            fh.seek(4096)
            fh.write(os.urandom(path.stat().st_size - 4096))
    state, problem = st.load(tmp_path)
    assert problem is not None and "anomaly.db is damaged" in problem and "fresh baseline" in problem
    assert state.findings == [] and (tmp_path / "anomaly.db.damaged").exists()
    # And a backup's reads and record go on (a fresh file when the old one is damaged).
    db = st.AnomalyDB(tmp_path)
    key = st.key_of((b"/x",))
    db.series_model(key), db.reported(key), db.get(b"/x/f1")
    db.record(_finding(999), key, [], learnt={"added": 1.0})
    db.close()
    state, problem = st.load(tmp_path)
    assert f"{999:064x}" in {f.snapshot for f in state.findings}


def test_a_busy_database_is_waited_for_not_taken_for_a_damaged_one(tmp_path: Path) -> None:
    """Another process holds the write lock (a command, the daemon) for a second: the
    backup's record waits and lands; nothing is set aside."""
    import threading
    import time
    st.AnomalyDB(tmp_path).close()
    holder = sqlite3.connect(tmp_path / "anomaly.db", isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    threading.Timer(1.0, lambda: holder.execute("ROLLBACK")).start()
    db = st.AnomalyDB(tmp_path)
    t0 = time.monotonic()
    db.record(_finding(7), st.key_of((b"/x",)), [])
    assert time.monotonic() - t0 >= 0.5 and db.problem is None
    db.close()
    holder.close()
    assert not (tmp_path / "anomaly.db.damaged").exists()
    assert [f.snapshot for f in st.load(tmp_path)[0].findings] == [f"{7:064x}"]
    assert not st._is_damage(sqlite3.OperationalError("database is locked"))


class _Ctx:
    def __init__(self) -> None:
        self.warned: list[str] = []

    def warn(self, text: str) -> None:
        self.warned.append(text)


def test_the_baseline_written_in_steps_is_the_baseline_learnt_at_once(tmp_path: Path) -> None:
    """Each backup appends its features and the whole baseline is written every
    REWRITE_EVERY: what a backup reads back is, to the bit, the baseline that learnt every
    snapshot in turn (a full ring of an upgraded node included), through an ack too."""
    import numpy as np
    from corestate.node.app import anomaly as app
    ctx: Any = _Ctx()
    key = st.key_of((b"/x",))
    rng = np.random.default_rng(3)
    want = an.Baseline.from_bytes(base64.b64decode(str(_baseline_entry(1990)["baseline"])))
    old = st.AnomalyState()
    old.series[key] = {"baseline": base64.b64encode(want.to_bytes()).decode(), "exts": []}
    st.save(tmp_path, old)
    for i in range(3 * app.REWRITE_EVERY + 5):
        db = st.AnomalyDB(tmp_path)
        m = db.series_model(key)
        base = app._baseline(m.baseline, m.pending, ctx)
        assert np.array_equal(base.ring, want.ring) and base.learnt == want.learnt, i
        feats = an.Features(**{n: float(rng.exponential(3.0)) for n in an.FEATURE_NAMES})
        learnt, blob = app._learn(base, len(m.pending), feats)
        want.learn(feats)
        db.record(_finding(i), key, ["txt"], learnt=learnt, baseline=blob)
        assert len(db.series_model(key).pending) == (i + 1) % app.REWRITE_EVERY
        db.close()
    state, problem = st.load(tmp_path)  # the commands' view, and an ack's learning
    assert problem is None and not ctx.warned
    base = app._entry_baseline(state.series[key], ctx)
    assert np.array_equal(base.ring, want.ring) and base.count == an.baseline.WINDOW


def test_a_backup_decodes_only_its_series_recent_snapshots_and_finds_what_the_whole_list_gives() -> None:
    """``begin`` reads snapshots newest first and stops at the series' last one before
    now: what it keeps gives ``assess`` the same parent, file count and protected snapshot
    as filtering every snapshot (this peer's if it has any), over random histories with
    other series, other peers' snapshots and clocks ahead; and a long history is not
    decoded whole."""
    import random
    from types import SimpleNamespace

    from corestate.node.app import anomaly as app
    rng = random.Random(5)
    for trial in range(300):
        snaps = []
        for i in range(rng.randint(0, 12)):
            snaps.append(SimpleNamespace(id=bytes([i]) * 32, record=SimpleNamespace(
                paths=[rng.choice([b"/a", b"/b"])], peer_id=rng.choice(["me", "me", "other"]),
                time_ns=rng.randint(0, 100), files=i)))
        snaps.sort(key=lambda s: (s.record.time_ns, s.id))
        decoded: list[object] = []

        def newest_first(snaps: list[SimpleNamespace] = snaps, decoded: list[object] = decoded) -> Any:
            for s in reversed(snaps):
                decoded.append(s)
                yield s
        node: Any = SimpleNamespace(repo=SimpleNamespace(keys=SimpleNamespace(peer_id="me"),
                                                         snapshots_newest_first=newest_first))
        now, new_time = 60, rng.randint(60, 110)
        mine = [s for s in snaps if s.record.peer_id == "me"] or snaps
        full = [s for s in mine if s.record.paths == [b"/a"]]
        got = app._recent(node, (b"/a",), now)
        assert bool(got) == bool(full) and (not full or got[-1] is full[-1]), trial

        def protects(before: list[Any], new_time: int = new_time) -> Any:
            prev = [s for s in before if s.record.time_ns <= new_time]
            return prev[-1] if prev else None
        assert protects(got) is protects(full), trial
    # A long history of one series: only the newest record is decoded.
    snaps = [SimpleNamespace(id=i.to_bytes(32, "big"), record=SimpleNamespace(
        paths=[b"/a"], peer_id="me", time_ns=i, files=i)) for i in range(2000)]
    decoded = []

    def all_newest_first() -> Any:
        for s in reversed(snaps):
            decoded.append(s)
            yield s
    node = SimpleNamespace(repo=SimpleNamespace(keys=SimpleNamespace(peer_id="me"),
                                                snapshots_newest_first=all_newest_first))
    assert app._recent(node, (b"/a",), 10_000) == [snaps[-1]] and len(decoded) == 1


def test_reading_a_home_where_the_model_never_ran_creates_nothing(tmp_path: Path) -> None:
    state, problem = st.load(tmp_path)
    assert state.findings == [] and state.series == {} and problem is None
    assert list(tmp_path.iterdir()) == []


def test_deleted_files_kept_probes_are_looked_up_at_once_past_the_parameter_bound(tmp_path: Path) -> None:
    """``get_many`` (a backup's deleted files, looked up together at its end) asks in parts
    of 500 paths: 1,234 paths, half of them probed before and one with a damaged row, give
    exactly the probed ones, the same records ``get`` gives one by one."""
    db = st.AnomalyDB(tmp_path)
    try:
        paths = [b"/x/dir%d/f%04d.txt" % (i % 7, i) for i in range(1234)]
        probed = paths[::2]
        db.upserts = [(p, json.dumps(["text", 4.0, 9.0, 0.0, True, False, i % 3, 4096, 0.0, 0.0, -1]))
                      for i, p in enumerate(probed)]
        db.flush()
        db.db.execute("UPDATE probes SET probe = '{not json' WHERE path = ?", (probed[7],))
        got = db.get_many(paths)
        assert set(got) == set(probed) - {probed[7]}
        assert all(got[p] == db.get(p) for p in probed[:40] + probed[-40:] if p != probed[7])
        assert got[probed[600]][6] == 600 % 3
        assert db.get_many([]) == {}
    finally:
        db.close()
