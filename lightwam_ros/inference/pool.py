"""InferencePool: k plain worker threads running ``predict(request) -> ActionChunk`` concurrently.

The node's control loop must never wait on the model, and with ``chunk.max_inflight`` = k the
scheduler plans up to k overlapping requests (scheduler.py, "Why overlap"). The pool is the
hand-off between the two: ``submit`` never blocks (False when every slot is taken), ``poll``
returns what finished since the last poll, in finish order, each with the scheduler ticket it was
submitted with and the monotonic time it finished -- so the caller can merge a chunk as if it had
arrived when the worker finished (``ChunkScheduler.on_chunk(chunk, arrival, ticket)``) even though
it only collects results at its next control tick.

Why plain threads and not executor callbacks or a ThreadPoolExecutor: an inference takes several
control periods and must not occupy an executor thread (a MultiThreadedExecutor made the 50 Hz
timer jitter worse, docs/design.md, "Threading and timing model"); and a futures executor queues without
bound, while here a request that cannot start at once must be refused so the caller keeps its newer
frame set for the
next try. The model call releases the GIL for its heavy parts (torch / ONNX Runtime kernels), so
threads do overlap.

A slot is taken at ``submit`` and given back the moment its predict returns or raises (the result
waits in the finished list until polled); an exception becomes an error result and the thread
lives on. Workers always run with normal scheduling: a thread inherits SCHED_FIFO from the thread
that creates it (the node configures on its executor thread, which realtime.py may have made
SCHED_FIFO), and a real-time compute thread would keep the control tick of the same priority off
its core until the inference ends. Interface: a superset of the node's former single-slot InferenceWorker (busy, submit,
poll, close), with the ticket passed to submit and a list returned by poll.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, NamedTuple

from lightwam_ros.types import ActionChunk


class PoolResult(NamedTuple):
    """One finished request: a chunk, or the error that prevented it."""

    ticket: int | None  # as given to submit (the scheduler's inference_started ticket)
    request: Any  # as given to submit (the node: a FrameSet with state and instruction)
    chunk: ActionChunk | None
    error: str | None  # "ExceptionType: message" when predict raised
    finished_monotonic_ns: int  # time.monotonic_ns() when predict returned; non-decreasing over poll()

    @property
    def frames(self) -> Any:
        """The request (the former InferenceWorker result called it ``frames``)."""
        return self.request


class InferencePool:
    """``workers`` threads, each running one request at a time (see the module doc)."""

    def __init__(self, predict_fn: Callable[[Any], ActionChunk], workers: int,
                 name: str = "lightwam-inference") -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"InferencePool workers must be an int >= 1, got {workers!r}")
        self._predict = predict_fn
        self._workers = workers
        self._cond = threading.Condition()
        self._queue: deque[tuple[int | None, Any]] = deque()  # submitted, not yet picked up
        self._occupied = 0  # slots taken: queued + running
        self._finished: list[PoolResult] = []
        self._stop = False
        self._threads = [threading.Thread(target=self._run, name=f"{name}-{i}", daemon=True)
                         for i in range(workers)]
        for t in self._threads:
            t.start()

    # -- queries -----------------------------------------------------------------------------------

    @property
    def workers(self) -> int:
        return self._workers

    @property
    def free_slots(self) -> int:
        """Requests that submit() would accept now (0 after close)."""
        with self._cond:
            return 0 if self._stop else self._workers - self._occupied

    @property
    def inflight(self) -> int:
        """Requests submitted and not finished yet."""
        with self._cond:
            return self._occupied

    @property
    def busy(self) -> bool:
        """True when submit() would refuse (every slot taken, or closed): the InferenceWorker meaning."""
        return self.free_slots == 0

    # -- hand-off ----------------------------------------------------------------------------------

    def submit(self, ticket: int | None, request: Any) -> bool:
        """Start ``predict_fn(request)`` on a free worker; False (and nothing started) if none is free."""
        with self._cond:
            if self._stop or self._occupied >= self._workers:
                return False
            self._occupied += 1
            self._queue.append((ticket, request))
            self._cond.notify()
            return True

    def poll(self) -> list[PoolResult]:
        """Results finished since the last poll, in finish order (each returned once)."""
        with self._cond:
            done, self._finished = self._finished, []
            return done

    @property
    def running(self) -> int:
        """Requests a worker is computing now (submitted, picked up, not finished)."""
        with self._cond:
            return self._occupied - len(self._queue)

    def close(self, timeout: float = 30.0) -> bool:
        """Stop accepting requests, let running ones finish and join the threads (at most ``timeout``
        seconds in all). Requests never started become error results. True when every thread ended.

        A request still running at the timeout is abandoned, not stopped: its thread is a daemon, so
        it never keeps the process from exiting (a model call cannot be interrupted; it holds no
        robot command), and its result is dropped. While it runs, the model it uses must stay open:
        close the model only when this returned True or ``running`` is 0 (idle threads may still be
        on their way out; they never touch the model again)."""
        with self._cond:
            self._stop = True
            while self._queue:
                ticket, request = self._queue.popleft()
                self._finish(ticket, request, None, "InferencePool closed before the request started")
            self._cond.notify_all()
        deadline = time.monotonic() + max(0.0, timeout)
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)

    def __enter__(self) -> InferencePool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- workers -----------------------------------------------------------------------------------

    def _finish(self, ticket: int | None, request: Any, chunk: ActionChunk | None, error: str | None) -> None:
        """Called with the lock held: the finish time is taken under it, so list order = time order."""
        self._finished.append(PoolResult(ticket, request, chunk, error, time.monotonic_ns()))
        self._occupied -= 1

    @staticmethod
    def _normal_scheduling() -> None:
        """Drop an inherited real-time policy (lowering it needs no privilege); see the module doc."""
        if hasattr(os, "sched_getscheduler") and os.sched_getscheduler(0) != os.SCHED_OTHER:
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))

    def _run(self) -> None:
        self._normal_scheduling()
        while True:
            with self._cond:
                while not self._queue and not self._stop:
                    self._cond.wait()
                if not self._queue:  # stopped, nothing left to run
                    return
                ticket, request = self._queue.popleft()
            chunk, error = None, None
            try:
                chunk = self._predict(request)
            except BaseException as exc:  # noqa: BLE001 - reported to the caller, which holds the robot
                error = f"{type(exc).__name__}: {exc}"
            with self._cond:
                self._finish(ticket, request, chunk, error)
