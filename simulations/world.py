"""The simulated world: nodes, packs, churn, failures, backups, and what they cost.

State is numpy arrays so that a year of 10,000 nodes and 1,000,000 packs fits in memory and
time: ``loc[pack, slot]`` is the node holding share ``slot`` of a pack (-1: none), ``live``
counts the shares that physically exist, ``onl`` the ones on nodes online now. Each node
keeps the keys ``pack * n + slot`` it holds (chunks appended as shares arrive; a node
flagged *dirty* may hold stale keys, filtered against ``loc`` when next read), so that a
node going up or down touches only its own shares.

Processes (each off when its table is left out of the scenario):

- churn: each node alternates online and offline sessions (exponential, Weibull or a
  trace); it starts online with probability ``on / (on + off)`` (the stationary state);
- failures: a node loses its disk for good after an exponential or Weibull time and is
  replaced at once by an empty node at the same index (same churn, same ownership: the
  user reinstalls and recovers its key); a whole site can fail at once;
- backups: owners add packs over time (placed by the policy);
- repair: the policy (``simulations/policy.py``): a validation model, or the node's real
  cores.

Invariants:
- A pack is *lost* the moment fewer than k of its shares exist; it never comes back.
  A pack is *available* while at least k of its shares sit on online nodes.
- ``availability`` is the time average, over the horizon, of the fraction of existing packs
  that are available (lost packs count as unavailable).
- Every random choice comes from the run's seeded :class:`~.engine.Draws`.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from corestate.simulations.engine import Draws, Engine
from corestate.simulations.errors import ScenarioError
from corestate.simulations.scenario import Scenario

# event kinds
CHURN, FAIL, SITE_FAIL, SAMPLE, POLICY, CHURN_TICK = 0, 1, 2, 3, 4, 5

HOURS = 1 / 24.0


class Policy(Protocol):
    """What repairs: a validation model or the node's real cores."""

    def start(self) -> None: ...

    def on_event(self, kind: int, a: int, b: int) -> None: ...

    def on_lost_shares(self, packs: np.ndarray) -> None: ...

    def on_online(self, node: int, online: bool) -> None: ...

    def place_new(self, packs: np.ndarray) -> None: ...


@dataclass
class Series:
    """The time series: one row per sample."""

    rows: list[dict[str, float]] = field(default_factory=list)


class World:
    """The state and the processes; :meth:`run` plays the scenario to its horizon."""

    def __init__(self, sc: Scenario, seed: int, *, progress: Callable[[float], None] | None = None) -> None:
        self.sc = sc
        self.seed = seed
        self.draws = Draws(seed)
        self.engine = Engine()
        self.progress = progress
        w, code = sc.world, sc.code
        self.k, self.n, self.N = code.k, code.n, w.nodes
        self.share_size = max(1, math.ceil(w.pack_size / code.k))
        extra = 0
        if sc.backups is not None:
            extra = math.ceil(sc.backups.packs_per_day * w.days * 1.05) + w.nodes
        self.P = w.packs + extra
        self.loc = np.full((self.P, self.n), -1, dtype=np.int32)
        self.locf = self.loc.reshape(-1)
        self.live = np.zeros(self.P, dtype=np.int16)
        self.onl = np.zeros(self.P, dtype=np.int16)
        self.lost = np.zeros(self.P, dtype=bool)
        self.lost_at = np.full(self.P, np.nan)
        self.degraded_since = np.full(self.P, np.nan)
        self.owner = np.zeros(self.P, dtype=np.int32)
        self.created = 0  # packs 0..created-1 exist
        self.online = np.ones(self.N, dtype=bool)
        self.offline_since = np.zeros(self.N)
        self.site = (np.arange(self.N) % w.sites) if w.sites > 0 else np.arange(self.N)
        self.used = np.zeros(self.N, dtype=np.int64)  # shares held
        self.disk_losses = np.zeros(self.N, dtype=np.int64)  # per node index
        self._chunks: list[list[np.ndarray]] = [[] for _ in range(self.N)]
        self._dirty = np.zeros(self.N, dtype=bool)
        self._packs: dict[int, np.ndarray] = {}
        # accounting
        self.unavail = 0  # existing packs with fewer than k shares online
        self._t_last = 0.0
        self._acc_unavail = 0.0
        self._acc_exist = 0.0
        self.packs_lost = 0
        self.repair_bytes = 0.0
        self.audit_bytes = 0.0
        self.backup_bytes = 0.0
        self.repairs = 0
        self.shares_rebuilt = 0
        self.failures = 0
        self.site_failures = 0
        self.repair_times: list[float] = []
        self.series = Series()
        self.policy: Policy = _NoPolicy()
        self._trace: dict[int, list[tuple[float, float]]] = {}
        ch = sc.churn
        self.churn_step = ch.step if ch is not None and ch.model != "trace" else 0.0
        self.next_toggle = np.zeros(0)
        self.few_shares = 64  # put_few's scalar path up to this many shares
        self.idle_rounds = True  # the real policy's idle rounds through Scheduler.run_idle
        self.churn_batch = True  # a churn step's switches in one pass (_switch_batch)
        # Hollow holders ([faults]): they accept shares and answer, but keep nothing
        # usable, so their shares count neither as live nor as online.
        self.hollow = np.zeros(self.N, dtype=bool)
        if sc.faults is not None and sc.faults.bad_nodes > 0:
            bad = round(sc.faults.bad_nodes * self.N)
            self.hollow[self.draws.gen.choice(self.N, size=bad, replace=False)] = True
        self.any_hollow = bool(self.hollow.any())
        self._mark = np.zeros(self.P, dtype=np.int32)  # _switch_batch's scratch, per pack

    # -- holdings ------------------------------------------------------------------------

    def packs_of(self, x: int) -> np.ndarray:
        """The packs node ``x`` holds a share of (cached until its holdings change)."""
        p = self._packs.get(x)
        if p is None:
            p = self._packs[x] = self.holdings(x) // self.n
        return p

    def holdings(self, x: int) -> np.ndarray:
        """The keys (pack * n + slot) node ``x`` holds now, each once."""
        ch = self._chunks[x]
        if len(ch) == 1 and not self._dirty[x]:
            return ch[0]
        keys = np.concatenate(ch) if ch else np.zeros(0, dtype=np.int64)
        if self._dirty[x]:
            keys = np.unique(keys[self.locf[keys] == x])
            self._dirty[x] = False
        self._chunks[x] = [keys]
        return keys

    def add_shares(self, packs: np.ndarray, slots: np.ndarray, nodes: np.ndarray) -> None:
        """Put share ``slots[i]`` of ``packs[i]`` on ``nodes[i]`` (those slots are empty,
        and no node gets two shares of one pack)."""
        if len(packs) == 0:
            return
        keys = packs.astype(np.int64) * self.n + slots
        self.locf[keys] = nodes
        np.add.at(self.used, nodes, 1)
        order = np.argsort(nodes, kind="stable")
        sn = nodes[order]
        sk = keys[order]
        cuts = np.flatnonzero(np.diff(sn)) + 1
        for part_nodes, part_keys in zip(np.split(sn, cuts), np.split(sk, cuts), strict=True):
            y = int(part_nodes[0])
            self._chunks[y].append(part_keys)
            self._packs.pop(y, None)
        up = np.unique(packs)
        before = self.onl[up].copy()
        good = ~self.hollow[nodes]
        np.add.at(self.live, packs[good] if self.any_hollow else packs, 1)
        np.add.at(self.onl, packs[self.online[nodes] & good], 1)
        after = self.onl[up]
        exist = up < self.created
        self.unavail -= int(np.count_nonzero(exist & (before < self.k) & (after >= self.k)))
        full = exist & (self.live[up] == self.n) & ~np.isnan(self.degraded_since[up])
        if full.any():
            fp = up[full]
            self.repair_times.extend((self.engine.now - self.degraded_since[fp]).tolist())
            self.degraded_since[fp] = np.nan

    def put_few(self, packs: list[int], slots: list[int], nodes: list[int]) -> None:
        """:meth:`add_shares` for up to ``few_shares`` shares (a repair job's), with scalar
        steps, pack by pack in ascending order as :meth:`add_shares` keeps its books: the
        same state (tests/simulations/test_policy.py runs both)."""
        if len(packs) > self.few_shares:
            self.add_shares(np.array(packs, dtype=np.int64), np.array(slots, dtype=np.int64),
                            np.array(nodes, dtype=np.int32))
            return
        by_pack: dict[int, tuple[list[int], list[int]]] = {}
        for q, i, y in zip(packs, slots, nodes, strict=True):
            ss, ys = by_pack.setdefault(q, ([], []))
            ss.append(i)
            ys.append(y)
        for q in sorted(by_pack):
            self.put_one(q, *by_pack[q])

    def put_one(self, pack: int, slots: list[int], nodes: list[int]) -> None:
        """:meth:`add_shares` for one pack, with scalar steps (a repair event's size)."""
        k, n = self.k, self.n
        before = int(self.onl[pack])
        on = real = 0
        for s, y in zip(slots, nodes, strict=True):
            key = pack * n + s
            self.locf[key] = y
            self.used[y] += 1
            self._chunks[y].append(np.array([key], dtype=np.int64))
            self._packs.pop(y, None)
            if not self.hollow[y]:
                real += 1
                on += bool(self.online[y])
        self.live[pack] += real
        self.onl[pack] = before + on
        if before < k <= before + on and pack < self.created:
            self.unavail -= 1
        if self.live[pack] == n and not np.isnan(self.degraded_since[pack]):
            self.repair_times.append(self.engine.now - float(self.degraded_since[pack]))
            self.degraded_since[pack] = np.nan

    def move_off(self, pack: int, slot: int, *, check: bool = True) -> None:
        """Forget the holder of one share (a holder counted lost): its copy is surplus
        from now on and never counted. ``check=False``: a new holder takes the slot at
        once (no loss, no degraded time)."""
        x = int(self.loc[pack, slot])
        if x < 0:
            return
        self.loc[pack, slot] = -1
        self._dirty[x] = True
        self._packs.pop(x, None)
        self.used[x] -= 1
        if self.hollow[x]:
            return  # it was never counted
        self.live[pack] -= 1
        if self.online[x]:
            if self.onl[pack] == self.k and pack < self.created:
                self.unavail += 1
            self.onl[pack] -= 1
        if not check:
            return
        if self.live[pack] == self.n - 1 and np.isnan(self.degraded_since[pack]):
            self.degraded_since[pack] = self.engine.now
        if self.live[pack] < self.k and not self.lost[pack]:
            self._mark_lost(np.array([pack]))

    def create_packs(self, count: int, owners: np.ndarray) -> np.ndarray:
        """Make ``count`` new packs (owned by ``owners``); the policy places them."""
        count = min(count, self.P - self.created)
        if count <= 0:
            return np.zeros(0, dtype=np.int64)
        ids = np.arange(self.created, self.created + count, dtype=np.int64)
        self.owner[ids] = owners[:count]
        self.created += count
        self.unavail += count  # no shares yet; placing them makes them available
        self.policy.place_new(ids)
        return ids

    # -- node processes ------------------------------------------------------------------

    def _go(self, x: int, online: bool) -> None:
        if self.online[x] == online:
            return
        p = self.packs_of(x) if not self.hollow[x] else np.zeros(0, dtype=np.int64)
        c = self.onl[p]
        if online:
            self.unavail -= int(np.count_nonzero(c == self.k - 1))
            self.onl[p] = c + 1
        else:
            self.unavail += int(np.count_nonzero(c == self.k))
            self.onl[p] = c - 1
            self.offline_since[x] = self.engine.now
        self.online[x] = online
        self.policy.on_online(x, online)

    def _mark_lost(self, packs: np.ndarray) -> None:
        packs = packs[~self.lost[packs]]
        self.lost[packs] = True
        self.lost_at[packs] = self.engine.now
        self.packs_lost += len(packs)

    def fail(self, x: int) -> None:
        """Node ``x`` loses its disk; an empty node replaces it at once."""
        self.failures += 1
        self.disk_losses[x] += 1
        keys = self.holdings(x)
        p = keys // self.n
        if self.hollow[x]:  # nothing of it was counted: only the records go
            self.locf[keys] = -1
            self.used[x] = 0
            self._chunks[x] = []
            self._dirty[x] = False
            self._packs.pop(x, None)
            self.policy.on_lost_shares(p)
            return
        if self.online[x]:
            c = self.onl[p]
            self.unavail += int(np.count_nonzero(c == self.k))
            self.onl[p] = c - 1
        self.locf[keys] = -1
        lv = self.live[p] - 1
        self.live[p] = lv
        left_full = p[(lv == self.n - 1) & np.isnan(self.degraded_since[p])]
        self.degraded_since[left_full] = self.engine.now
        self._mark_lost(p[lv < self.k])
        self.used[x] = 0
        self._chunks[x] = []
        self._dirty[x] = False
        self._packs.pop(x, None)
        self.policy.on_lost_shares(p)

    # -- churn ---------------------------------------------------------------------------

    def _session(self, online: bool) -> float:
        ch = self.sc.churn
        assert ch is not None
        mean = (ch.mean_online_hours if online else ch.mean_offline_hours) * HOURS
        if ch.model == "weibull":
            scale = mean / math.gamma(1 + 1 / ch.shape)
            return scale * float(self.draws.gen.weibull(ch.shape))
        return self.draws.exp(mean)

    def _start_churn(self) -> None:
        ch = self.sc.churn
        if ch is None:
            return
        if ch.model == "trace":
            self._load_trace(ch.file)
            for x in range(self.N):
                iv = self._trace.get(x)
                if iv is None:
                    continue  # not in the trace: always online
                self.online[x] = False
                for a, b in iv:
                    self.engine.push(a, CHURN, x, 1)
                    self.engine.push(b, CHURN, x, 0)
            # nodes whose first interval starts at 0 come online by their event
            return
        p_on = ch.mean_online_hours / (ch.mean_online_hours + ch.mean_offline_hours)
        if self.churn_step > 0:
            self.online[:] = self.draws.gen.random(self.N) < p_on
            self.next_toggle = self._sessions(self.online)
            self.engine.push(0.0, CHURN_TICK)
            return
        for x in range(self.N):
            on = self.draws.uniform() < p_on
            self.online[x] = on
            self.engine.push(self._session(on), CHURN, x, 0 if on else 1)

    def _load_trace(self, path: str) -> None:
        try:
            with open(path, newline="") as fh:
                for row in csv.reader(fh):
                    if not row or row[0].startswith("#"):
                        continue
                    x, a, b = int(row[0]), float(row[1]) * HOURS, float(row[2]) * HOURS
                    if not 0 <= x < self.N or b < a:
                        raise ScenarioError(f"[churn] file {path}", f"bad interval {row}")
                    self._trace.setdefault(x, []).append((a, b))
        except OSError as exc:
            raise ScenarioError("[churn] file", f"{path}: {exc.strerror}") from None
        except (ValueError, IndexError):
            raise ScenarioError(f"[churn] file {path}", "lines must be node,start_hours,end_hours") from None

    def _sessions(self, online: np.ndarray) -> np.ndarray:
        """Session lengths (days) for nodes entering the states ``online``, vectorised."""
        ch = self.sc.churn
        assert ch is not None
        mean = np.where(online, ch.mean_online_hours, ch.mean_offline_hours) * HOURS
        if ch.model == "weibull":
            return mean / math.gamma(1 + 1 / ch.shape) * self.draws.gen.weibull(ch.shape, size=len(online))
        return mean * self.draws.gen.standard_exponential(len(online))

    def _churn_tick(self) -> None:
        """Batched churn (``[churn] step`` > 0): every node whose session ended by now
        switches at once; the next tick is the first step at or after the next switch."""
        t = self.engine.now
        due = np.flatnonzero(self.next_toggle <= t)
        if len(due):
            going_up = ~self.online[due]
            if not (self.churn_batch and self._switch_batch(due, going_up)):
                self._switch_each(due, going_up)
            self.online[due] = going_up
            self.offline_since[due[~going_up]] = t
            # From the exact switch time, not the tick: the batching delays when a switch
            # is applied, never the sessions' lengths (else on and off would both grow by
            # half a step and the online fraction would drift).
            self.next_toggle[due] = self.next_toggle[due] + self._sessions(going_up)
            for x in due[going_up].tolist():
                self.policy.on_online(x, True)
        step = self.churn_step
        nxt = float(self.next_toggle.min())
        self.engine.push(t + step * max(1, math.ceil((nxt - t) / step - 1e-12)), CHURN_TICK)

    def _switch_each(self, due: np.ndarray, going_up: np.ndarray) -> None:
        """Apply a churn step's switches to ``onl`` and ``unavail`` one node at a time (a
        pack may have shares on several switching nodes)."""
        k, onl = self.k, self.onl
        for x, up in zip(due.tolist(), going_up.tolist(), strict=True):
            if self.hollow[x]:
                continue  # its shares never count as online
            p = self.packs_of(x)
            c = onl[p]
            if up:
                self.unavail -= int(np.count_nonzero(c == k - 1))
                onl[p] = c + 1
            else:
                self.unavail += int(np.count_nonzero(c == k))
                onl[p] = c - 1

    def _switch_batch(self, due: np.ndarray, going_up: np.ndarray) -> bool:
        """:meth:`_switch_each` in one pass over all the switching nodes' packs (a churn
        step switches ~14 nodes at the tenth scale: one pass costs a fraction of 14). A
        pack with shares on several switching nodes gets its deltas summed first, found
        with a scratch mark per pack (cheaper than sorting): whichever of its positions
        the mark keeps stands for the pack. The same ``onl`` and ``unavail``
        (tests/simulations/test_world.py runs both). False when there is nothing to batch.
        """
        if len(due) < 2:
            return False
        if self.any_hollow:
            return False
        parts = [self.packs_of(x) for x in due.tolist()]
        p = np.concatenate(parts)
        if len(p) == 0:
            return True
        pos = np.arange(len(p), dtype=np.int32)
        mark = self._mark
        mark[p] = pos
        m = mark[p]
        keep = m == pos
        delta = np.repeat(np.where(going_up, 1, -1).astype(np.int16), [len(a) for a in parts])
        dup = np.flatnonzero(~keep)
        if len(dup):
            total = delta.copy()
            np.add.at(total, m[dup], delta[dup])  # into the position kept for that pack
            p, delta = p[keep], total[keep]
        before = self.onl[p]
        after = before + delta
        self.onl[p] = after
        k = self.k
        self.unavail += int(np.count_nonzero(after < k)) - int(np.count_nonzero(before < k))
        return True

    def _churn(self, x: int, up: int) -> None:
        self._go(x, bool(up))
        if self.sc.churn is not None and self.sc.churn.model != "trace":
            self.engine.push(self.engine.now + self._session(bool(up)), CHURN, x, 0 if up else 1)

    # -- failures ------------------------------------------------------------------------

    def _life(self) -> float:
        f = self.sc.failures
        assert f is not None
        if f.model == "weibull":
            scale = f.node_mttf_days / math.gamma(1 + 1 / f.shape)
            return scale * float(self.draws.gen.weibull(f.shape))
        return self.draws.exp(f.node_mttf_days)

    def _start_failures(self) -> None:
        f = self.sc.failures
        if f is None:
            return
        if f.node_mttf_days > 0:
            for x in range(self.N):
                self.engine.push(self._life(), FAIL, x)
        if f.site_mttf_days > 0:
            for s in np.unique(self.site).tolist():
                self.engine.push(self.draws.exp(f.site_mttf_days), SITE_FAIL, int(s))

    # -- the run -------------------------------------------------------------------------

    def _sample(self) -> None:
        exist = max(self.created, 1)
        self.series.rows.append({
            "day": self.engine.now,
            "available": 1.0 - self.unavail / exist,
            "packs": self.created,
            "packs_lost": self.packs_lost,
            "degraded": int(np.count_nonzero(self.live[: self.created] < self.n)),
            "online_nodes": int(np.count_nonzero(self.online)),
            "repair_bytes": self.repair_bytes,
            "audit_bytes": self.audit_bytes,
        })

    def kill_at(self, day: float, node: int) -> None:
        """Make ``node`` lose its disk at ``day`` (once, besides the failure process):
        for experiments and tests. Call before :meth:`run`."""
        self.engine.push(day, FAIL, node, 1)

    def kill_site_at(self, day: float, site: int) -> None:
        """Make every node of ``site`` lose its disk at ``day`` (once)."""
        self.engine.push(day, SITE_FAIL, site, 1)

    def run(self) -> dict[str, Any]:
        """Play the scenario to its horizon; the summary (see :func:`summary`)."""
        from corestate.simulations.policy import make_policy
        sc = self.sc
        self.policy = make_policy(self)
        self._start_churn()
        self.create_packs(sc.world.packs, np.arange(sc.world.packs, dtype=np.int32) % self.N)
        self._start_failures()
        self.policy.start()
        horizon = sc.world.days
        every = sc.world.sample_every
        self.engine.push(0.0, SAMPLE)
        next_progress = 0.0
        eng = self.engine
        growth = sc.backups is not None and sc.backups.packs_per_day > 0
        while True:
            if self.packs_lost == self.created and not growth and self.created:
                break  # every pack is lost and none will come: nothing left to happen
            ev = eng.pop(horizon)
            if ev is None:
                break
            t, kind, a, b = ev
            dt = t - self._t_last
            if dt > 0:
                self._acc_unavail += self.unavail * dt
                self._acc_exist += self.created * dt
                self._t_last = t
            if kind == CHURN_TICK:
                self._churn_tick()
            elif kind == CHURN:
                self._churn(a, b)
            elif kind == FAIL:
                self.fail(a)
                if b == 0 and sc.failures is not None and sc.failures.node_mttf_days > 0:
                    eng.push(t + self._life(), FAIL, a)
            elif kind == SITE_FAIL:
                self.site_failures += 1
                for x in np.flatnonzero(self.site == a).tolist():
                    self.fail(x)
                if b == 0 and sc.failures is not None and sc.failures.site_mttf_days > 0:
                    eng.push(t + self.draws.exp(sc.failures.site_mttf_days), SITE_FAIL, a)
            elif kind == SAMPLE:
                self._sample()
                if t + every <= horizon:
                    eng.push(t + every, SAMPLE)
                if self.progress is not None and t >= next_progress:
                    self.progress(t / horizon if horizon else 1.0)
                    next_progress = t + horizon / 100
            else:
                self.policy.on_event(kind, a, b)
        dt = horizon - self._t_last
        if dt > 0:
            self._acc_unavail += self.unavail * dt
            self._acc_exist += self.created * dt
        eng.now = horizon
        if not self.series.rows or self.series.rows[-1]["day"] < horizon:
            self._sample()
        if self.progress is not None:
            self.progress(1.0)
        return self.summary()

    def summary(self) -> dict[str, Any]:
        sc = self.sc
        days = sc.world.days
        lost_times = self.lost_at[: self.created][self.lost[: self.created]]
        rt = np.array(self.repair_times) if self.repair_times else np.zeros(0)
        return {
            "scenario": sc.name,
            "seed": self.seed,
            "nodes": self.N,
            "packs": int(self.created),
            "packs_lost": int(self.packs_lost),
            "loss_fraction": self.packs_lost / max(self.created, 1),
            "availability": (1.0 - self._acc_unavail / self._acc_exist) if self._acc_exist else 1.0,
            "repair_bytes": float(self.repair_bytes),
            "repair_bytes_per_node_day": float(self.repair_bytes) / self.N / days if days else 0.0,
            "audit_bytes": float(self.audit_bytes),
            "backup_bytes": float(self.backup_bytes),
            "repairs": int(self.repairs),
            "member_repairs": int(getattr(self.policy, "member_repairs", 0)),
            "evictions": int(getattr(self.policy, "evictions", 0)),
            "shares_on_bad_nodes": int(self.used[self.hollow].sum()),
            "shares_rebuilt": int(self.shares_rebuilt),
            "node_failures": int(self.failures),
            "site_failures": int(self.site_failures),
            "mean_time_to_loss_days": float(lost_times.mean()) if len(lost_times) else None,
            "mean_time_to_repair_days": float(rt.mean()) if len(rt) else None,
            "days": days,
            "k": self.k,
            "n": self.n,
            "policy": "real" if sc.real_policy else f"validation:{sc.repair.model if sc.repair else ''}",
            "events": int(self.engine.events),
        }


class _NoPolicy:
    def start(self) -> None: ...

    def on_event(self, kind: int, a: int, b: int) -> None: ...

    def on_lost_shares(self, packs: np.ndarray) -> None: ...

    def on_online(self, node: int, online: bool) -> None: ...

    def place_new(self, packs: np.ndarray) -> None: ...


def run(sc: Scenario, seed: int, *, progress: Callable[[float], None] | None = None) -> tuple[dict[str, Any], World]:
    """Run one scenario; the summary and the world (its series, repair times)."""
    world = World(sc, seed, progress=progress)
    return world.run(), world


def write_series(world: World, path: Path) -> None:
    rows = world.series.rows
    with open(path, "w", newline="") as fh:
        wr = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["day"])
        wr.writeheader()
        wr.writerows(rows)
