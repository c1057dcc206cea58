"""Forked worker processes for CPU work on whole files, with a Future per job.

Threads would share one GIL, and reading small files is a stream of short system calls
around which threads hand the GIL back and forth (measured: two threads slower than one).
Forked workers inherit the caller's state (keys, the set of known chunk ids, config) at
the moment they start, run ``work(job)`` in a loop, and send back results and whatever
``harvest()`` collects (the packs they landed). ``start()`` runs first in each worker, to
drop state that must not be shared with the parent (an open pack: its salt and nonces
belong to the parent). At ``close`` each worker runs ``finish()``
(flush its open pack) and exits.

Invariants: a worker dies with its parent (PR_SET_PDEATHSIG), so no orphan keeps writing
the store after the parent was killed; a worker that dies fails every open job with
``WorkerDied`` instead of leaving the caller waiting; worker errors cross the process
boundary as (kind, fields) and are rebuilt by the caller's ``rebuild_error``.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import queue
import signal
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from corestate.node.errors import NodeError


class WorkerDied(NodeError):
    retryable = True

    def __init__(self, pid: int, code: int | None) -> None:
        super().__init__(f"a backup worker process ({pid}) died (exit {code})",
                         hint="run the backup again; what was stored is kept and reused")


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class ProcessWorkers:
    def __init__(
        self, n: int, work: Callable[[Any], Any], harvest: Callable[[], list[Any]],
        finish: Callable[[], list[Any]], describe_error: Callable[[BaseException], tuple[str, Any]],
        rebuild_error: Callable[[str, Any], BaseException], on_harvest: Callable[[Any], None],
        start: Callable[[], None] = lambda: None,
    ) -> None:
        ctx = multiprocessing.get_context("fork")
        # One task queue per worker: the caller chooses the worker (see ``submit``).
        self._tasks: list[Any] = [ctx.SimpleQueue() for _ in range(n)]
        self._results: Any = ctx.Queue()
        self._futures: dict[int, Future[Any]] = {}
        self._lock = threading.Lock()
        self._next = 0
        self._rebuild = rebuild_error
        self._on_harvest = on_harvest
        self._closed = False
        self._procs = []
        for i in range(n):
            p = ctx.Process(target=self._child, args=(i, start, work, harvest, finish, describe_error),
                            daemon=True)
            p.start()
            self._procs.append(p)
        self._collector = threading.Thread(target=self._collect, name="workers-collector", daemon=True)
        self._collector.start()

    # -- child --------------------------------------------------------------------------

    def _child(self, index: int, start: Callable, work: Callable, harvest: Callable,
               finish: Callable, describe: Callable) -> None:
        _die_with_parent()
        if os.getppid() == 1:
            os._exit(1)
        code = 0
        try:
            start()
            while True:
                msg = self._tasks[index].get()
                if msg is None:
                    try:
                        self._results.put(("done", None, finish()))
                    except BaseException as exc:
                        self._results.put(("error", None, describe(exc)))
                    break
                job_id, job = msg
                try:
                    result = work(job)
                    self._results.put(("ok", job_id, (result, harvest())))
                except BaseException as exc:
                    self._results.put(("error", job_id, describe(exc)))
        except BaseException:
            code = 1
        finally:
            self._results.close()
            self._results.join_thread()
            # Skip the parent's finalizers (its sqlite connection, its open files).
            os._exit(code)

    # -- parent -------------------------------------------------------------------------

    @property
    def size(self) -> int:
        return len(self._procs)

    def submit(self, job: Any, worker: int) -> Future[Any]:
        """Queue ``job`` for worker ``worker`` (0 <= worker < size)."""
        fut: Future[Any] = Future()
        with self._lock:
            job_id = self._next
            self._next += 1
            self._futures[job_id] = fut
        self._tasks[worker].put((job_id, job))
        return fut

    def _collect(self) -> None:
        done = 0
        while done < len(self._procs):
            try:
                kind, job_id, payload = self._results.get(timeout=0.5)
            except queue.Empty:
                dead = [p for p in self._procs if not p.is_alive() and p.exitcode not in (0, None)]
                if dead:
                    self._fail_all(WorkerDied(dead[0].pid or 0, dead[0].exitcode))
                    return
                continue
            except (EOFError, OSError):
                self._fail_all(WorkerDied(0, None))
                return
            if kind == "done":
                done += 1
                for item in payload:
                    self._on_harvest(item)
                continue
            with self._lock:
                fut = self._futures.pop(job_id, None) if job_id is not None else None
            if kind == "ok":
                result, harvested = payload
                for item in harvested:
                    self._on_harvest(item)
                if fut is not None:
                    fut.set_result(result)
            else:
                exc = self._rebuild(*payload)
                if fut is not None:
                    fut.set_exception(exc)
                else:
                    self._fail_all(exc)
                    return

    def _fail_all(self, exc: BaseException) -> None:
        with self._lock:
            futs, self._futures = list(self._futures.values()), {}
        for f in futs:
            if not f.done():
                f.set_exception(exc)
        self._failure = exc

    def close(self, *, flush: bool = True) -> None:
        """Let every worker flush and exit (or kill them), and wait for the collector."""
        if self._closed:
            return
        self._closed = True
        if flush:
            for q in self._tasks:
                q.put(None)
            self._collector.join()
        for p in self._procs:
            if not flush:
                p.kill()
            p.join()
        failure = getattr(self, "_failure", None)
        if flush and failure is not None:
            raise failure
