"""ChunkScheduler: turns action chunks into a command per control tick, on a simulated clock.

API
- ``ChunkScheduler(config: ChunkConfig)``
- ``on_chunk(chunk: ActionChunk, now_ns, ticket=None, check=None) -> ChunkOutcome`` -- merge a new
  chunk (answers its inference request whatever the outcome); ``check(rows) -> str | None`` is the
  safety filter's refusal test, applied only to a chunk that would otherwise be merged
  (``last_refusal`` keeps its reason).
- ``tick(now_ns) -> Tick`` -- the action for this control tick, or None with the TickStatus why.
- ``wants_inference(now_ns, expected_latency_ns=None, obs_stamp_ns=None) -> bool``;
  ``inference_started(now_ns, obs_stamp_ns=None) -> ticket``, ``inference_failed(ticket=None)`` --
  bracket each inference request; ``inflight``, ``coverage_end_ns()``, ``prime(latency_ns, steps,
  dt_ns)`` (expectations before the first chunk).
- ``upcoming(now_ns, max_steps=0) -> np.ndarray [m, A]`` -- the plan at now + (k+1)*dt, k < m (what a
  JointTrajectory carries).
- ``remaining_ns(now_ns)``, ``remaining_steps(now_ns)``, ``expected_latency_ns``, ``tick_period_ns``,
  ``lead_ns(latency_ns)``, ``dt_ns``, ``keeps_up(latency_ns, steps, dt_ns, frame_age_ns=0, max_inflight=1)``
- ``clear(status=TickStatus.REFUSED)``, ``reset()``, ``reconfigure(config)``

Time model (all integer ns): action k of a chunk is the target for t_k = stamp + k*dt (k = 0 is the
action issued at the observation). Only the first ``config.steps_limit(trained_steps)`` steps are
ever used. The plan in flight is a piecewise-linear trajectory through knots (time, position).

Step/time alignment: ``tick(now)`` returns the plan linearly interpolated at ``now``, not the step
whose time is nearest. Why: camera stamps (hence step times) have an arbitrary phase relative to the
control timer, and the control rate may differ from the action rate; picking the nearest step would
add up to dt/2 of timing error and a staircase when control is faster than the actions, while
interpolation gives the trajectory value at the tick time exactly. It is also what a
JointTrajectoryController does between position-only points, so forward and JTC outputs agree.

Merging at arrival time ``now``:
- A chunk whose stamp is not newer than the one in flight is refused (OUT_OF_ORDER).
- Steps with t_k < now have elapsed and are dropped; if no usable step remains: EXPIRED.
- replace (or blend_steps = 0, or nothing in flight): knots = (now, new(now)), then the remaining
  steps. new(now) interpolates between the last elapsed step and the first remaining one, so the
  command continues the new trajectory where it is at this instant.
- blend: knots = (now, old(now)), then at each remaining step the crossfade
  (1 - w) * old(t_k) + w * new_k with w = clamp((t_k - now) / window, 0, 1) and window = the overlap
  min(blend_steps * dt, end of the old plan - now): continuous at the seam, fully the new chunk
  after blend_steps steps or when the old plan ends, whichever is first (extrapolating the old plan
  past its end would bend the path away from both chunks). A full crossfade therefore needs the new
  chunk to arrive at least blend_steps * dt before the old plan ends; latency_margin sets that slack.
- ensemble (ACT's temporal ensembling): the scheduler keeps every accepted chunk whose usable steps
  have not all elapsed (``_covering``); knots = (now, then the new chunk's remaining step times), and
  the value at each knot time t is the weighted mean, over the chunks c covering t (first usable
  step <= t <= last usable step: never beyond a chunk's trained prefix / steps_limit), of c(t)
  (linearly interpolated, as the plan is) with weight exp(-ensemble_decay * age_c), age_c = (stamp_c
  - stamp of the oldest chunk covering t) / dt. Chunks are weighted oldest-first as in ACT (the
  oldest covering chunk has weight 1), so ACT's m carries over unchanged, with age counted in action
  steps of observation time rather than in chunk indices: ACT queries the policy every step, so its
  index i is the age in steps; here chunks come every few steps (the pacing), and counting them
  would make the weights depend on latency. At 50 Hz the ACT default 0.01 halves a weight per
  ln 2 / 0.01 = 69 steps (1.4 s) of age, i.e. the chunks covering a step weigh nearly the same; a
  negative decay favours the newest chunk instead. Refused, void, expired and out-of-order chunks
  never enter the ensemble, and clear()/reset() empty it (the model that was refused also produced
  the chunks in it). The seam is not made continuous: a new chunk joins with its full weight and an
  old one leaves at its last step, a jump of its weighted share of the disagreement each time --
  small in ACT (a new chunk every step, one of ~k), not necessarily here (a handful of chunks).

Inference pacing (``config.max_inflight`` = k requests may be in flight at once; each request is
identified by the ticket ``inference_started`` returns and is answered by ``on_chunk`` -- whatever
the outcome, stale and out-of-order chunks included -- or ``inference_failed``):
- The expected latency L is the max of the last LATENCY_WINDOW measured request-to-chunk times
  unless the caller passes one (before any measurement: the latency given to ``prime``).
- The lead (``lead_ns``) is how long before the plan ends a request must start:
  max((1 + latency_margin) * L, (floor(L / P) + 1) * P), P the control period (``tick_period_ns``,
  the median of the recent intervals between ``tick`` calls; before two ticks only the first term).
- With nothing in flight, a request is wanted when the plan ends within the lead (or there is no
  usable plan). This is the whole rule for k = 1.
- With requests in flight (and fewer than k), the plan is judged by its coverage: the max of the
  plan end and, per pending request, observation stamp + the span of a chunk (last usable step -
  stamp, from the last accepted chunk or ``prime``). A request is wanted when that coverage ends
  within the lead of now AND its observation is at least L / k newer than the newest
  pending one. The spacing keeps overlapping requests spread evenly over the latency: two requests
  started together deliver two chunks together, which cover no longer than one, and that phase
  would persist. Passing the candidate's ``obs_stamp_ns`` makes a stale frame set wait for a fresh
  one (an older observation covers less).

Why the lead has a tick term: a chunk is merged by a control tick, the first at or after its
request + L and after the request (a request made by a tick, with L = 0, is collected by the next
one; a result ready exactly at a tick is counted as collected by the next one too, as a worker
finishing at that instant may be), so at most c = floor(L / P) + 1 ticks after a request made by
a tick. The plan must still be alive at the first tick after it ends, T* (it ends at E, E < T* <=
E + P). Requests are asked for at every tick (and whenever a frame set forms), so the latest tick
that can still deliver in time is T* - c P; the plan has between (c - 1) P and c P left there, so
a lead of c P (at most L + P) makes that tick, or an earlier moment, ask.
(1 + margin) * L alone falls short whenever it is below c P: at L = 0 it would ask only once the
plan had ended, and a handover would hold a tick (``chunk_exhausted``) unless a frame set happened
to form between the plan's end and the next tick; with latency_margin 0 the rounding up of L to
whole ticks is never covered. The frame set's age does not
enter: the request takes the newest set already formed, and its age shortens the next chunk's
coverage (its plan ends age earlier), which that chunk's own plan end already accounts for. The
period is measured rather than configured so the scheduler needs nothing beyond its ticks (the
controller ticks it every control period, paused or not); the median ignores an odd extra call or
a gap.

Why overlap: with one inference at a time and latency L, the next observation cannot be taken before
the previous chunk arrives, so a chunk whose last usable step is D after its observation keeps the
command gapless only if 2 L + frame age <= D -- with L at 60 % of a chunk it runs dry every cycle,
whatever the pacing. With k requests spaced L / k apart, the condition is (1 + 1/k) L + age <= D
(``keeps_up``). Batch-1 policy inference on a GPU is launch- and latency-bound and leaves most of the
device idle, so a second request on its own CUDA stream overlaps the first at little cost to either.
On a saturated GPU (or the CPU) two in flight each take longer: the measured latency grows, the
pacing follows it, and diagnostics' keeps_up warning says when the rate cannot be sustained. Set
``chunk.max_inflight: 1`` where inference cannot overlap.

Requests pending at ``reset()`` are void: their chunks (answered by ticket) return VOID and are never
merged, so a resumed node does not act on an observation taken before the pause.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

import numpy as np

from lightwam_ros.config import ChunkConfig, MergeMode
from lightwam_ros.types import ActionChunk

LATENCY_WINDOW = 10  # request-to-chunk latencies kept for the expected latency (max of them)
TICK_WINDOW = 9  # intervals between tick() calls kept for the control period (their median)


class TickStatus(Enum):
    OK = "ok"
    EMPTY = "empty"  # no chunk accepted yet (or after reset)
    EXHAUSTED = "exhausted"  # the plan ended before a new chunk arrived
    REFUSED = "refused"  # plan dropped by clear() after a refused chunk, until the next accepted one


class ChunkOutcome(Enum):
    ACCEPTED = "accepted"
    OUT_OF_ORDER = "out_of_order"  # stamp not newer than the chunk in flight
    EXPIRED = "expired"  # every usable step had already elapsed on arrival
    VOID = "void"  # requested before reset(): never merged
    REFUSED = "refused"  # would have been merged, but check() refused it: the plan is dropped


@dataclass(frozen=True)
class _Request:
    requested_ns: int  # when it was handed to a worker
    obs_stamp_ns: int  # the observation it uses: its chunk will cover obs_stamp + span


@dataclass(frozen=True)
class Tick:
    action: np.ndarray | None  # float64 [A], None unless status is OK
    status: TickStatus
    remaining_steps: int  # plan knots still ahead of now (the queue depth)


class ChunkScheduler:
    """Holds the plan in flight and hands out one interpolated action per control tick."""

    def __init__(self, config: ChunkConfig, start_delay_ns: int = 0):
        self._config = config
        # How far ahead of the tick that sends it the output starts executing the plan (a
        # JointTrajectory stamped output.trajectory_start_delay ahead): the plan must reach that
        # far past a new chunk's arrival, so every lead grows by it.
        self.start_delay_ns = int(start_delay_ns)
        self._latencies: deque[int] = deque(maxlen=LATENCY_WINDOW)
        self._tick_intervals: deque[int] = deque(maxlen=TICK_WINDOW)
        self._last_tick_ns: int | None = None
        self._next_ticket = 1
        self._span_ns: int | None = None  # last usable step - stamp, of the last accepted chunk
        self._primed_latency_ns: int | None = None
        self._pending: dict[int, _Request] = {}  # ticket -> request, oldest first
        self._void: set[int] = set()  # tickets pending at a reset(), not answered yet
        self.last_refusal: str | None = None  # why check() refused the last REFUSED chunk
        self.reset()

    def reset(self) -> None:
        """Forget the plan and the last stamp (e.g. on activation or resume). Pending requests
        become void: their chunks return VOID. Measured latencies, the control period and the chunk
        span are kept (the last tick time is not: a reset may follow a clock jump)."""
        self._last_tick_ns = None
        self._times: np.ndarray | None = None  # int64 [n] knot times, strictly increasing
        self._values: np.ndarray | None = None  # float64 [n, A]
        self._stamp_ns: int | None = None  # observation stamp of the last accepted chunk
        self._dt_ns: int | None = None
        self._status_if_none = TickStatus.EMPTY
        self._covering: list[tuple[int, np.ndarray, np.ndarray]] = []  # ensemble: (stamp, times, values)
        self._void |= set(self._pending)
        self._pending = {}

    def reconfigure(self, config: ChunkConfig) -> None:
        """New merge/limit/margin settings apply from the next chunk; the plan in flight is kept."""
        self._config = config

    def clear(self, status: TickStatus = TickStatus.REFUSED) -> None:
        """Drop the plan (e.g. the safety filter refused a chunk); tick reports ``status`` until the
        next accepted chunk. The last stamp is kept, so older chunks stay refused."""
        self._times = self._values = None
        self._covering = []
        self._status_if_none = status

    @property
    def config(self) -> ChunkConfig:
        return self._config

    @property
    def dt_ns(self) -> int | None:
        """Step period of the last accepted chunk."""
        return self._dt_ns

    @property
    def stamp_ns(self) -> int | None:
        return self._stamp_ns

    # -- plan evaluation --------------------------------------------------------------------------

    def _value_at(self, t: int) -> np.ndarray:
        """Plan at time t; before the first knot / after the last: the first / last knot."""
        times, values = self._times, self._values
        if t <= times[0]:
            return values[0].copy()
        if t >= times[-1]:
            return values[-1].copy()
        i = int(np.searchsorted(times, t, side="right")) - 1
        a = (t - times[i]) / (times[i + 1] - times[i])
        return values[i] + a * (values[i + 1] - values[i])

    def _alive(self, now_ns: int) -> bool:
        return self._times is not None and now_ns <= self._times[-1]

    def remaining_ns(self, now_ns: int) -> int:
        """Time until the plan ends (0 if there is none or it has ended)."""
        return max(0, int(self._times[-1]) - now_ns) if self._times is not None else 0

    def remaining_steps(self, now_ns: int) -> int:
        """Knots strictly after now (the queue depth reported in diagnostics)."""
        if self._times is None:
            return 0
        return int(len(self._times) - np.searchsorted(self._times, now_ns, side="right"))

    def tick(self, now_ns: int) -> Tick:
        """The action for the control tick at now_ns (see the module doc for the alignment). Each
        call also measures the control period (``tick_period_ns``) the pacing leads by."""
        if self._last_tick_ns is not None and now_ns > self._last_tick_ns:
            self._tick_intervals.append(now_ns - self._last_tick_ns)
        self._last_tick_ns = now_ns
        if self._times is None:
            return Tick(None, self._status_if_none, 0)
        if not self._alive(now_ns):
            return Tick(None, TickStatus.EXHAUSTED, 0)
        return Tick(self._value_at(now_ns), TickStatus.OK, self.remaining_steps(now_ns))

    def upcoming(self, now_ns: int, max_steps: int = 0) -> np.ndarray:
        """The plan at now + (k+1)*dt for each such time not past its end (at most max_steps if > 0):
        the points of a JointTrajectory with time_from_start = (k+1)*dt. Empty [0, A] if none."""
        if not self._alive(now_ns):
            a = 0 if self._values is None else self._values.shape[1]
            return np.zeros((0, a))
        dt = self._dt_ns
        m = (int(self._times[-1]) - now_ns) // dt
        if max_steps > 0:
            m = min(m, max_steps)
        return np.stack([self._value_at(now_ns + (k + 1) * dt) for k in range(m)]) if m > 0 else \
            np.zeros((0, self._values.shape[1]))

    # -- merging ----------------------------------------------------------------------------------

    def on_chunk(self, chunk: ActionChunk, now_ns: int, ticket: int | None = None,
                 check: Callable[[np.ndarray], str | None] | None = None) -> ChunkOutcome:
        """Merge ``chunk`` (arrived at now_ns) into the plan; see the module doc for the rules.

        now_ns may be the time the worker finished, when the caller collects results later (e.g. at
        the next control tick): the merge is then exactly as if it had happened on time and the
        measured latency excludes the collection delay. Pass arrivals in time order, none earlier
        than the last tick that has already been executed.

        Whatever the outcome, it answers its request: ``ticket`` from inference_started, else the
        pending request with the chunk's observation stamp, else the oldest pending one.

        ``check`` sees the rows that may execute (the first steps_limit) only after the VOID,
        OUT_OF_ORDER and EXPIRED tests: a chunk that would never be merged cannot wipe the plan in
        flight, however bad it is. A refused chunk drops the plan (tick reports REFUSED): the
        model that produced it also produced the plan, and holding is the safe answer."""
        if ticket is not None and ticket in self._void:
            self._void.discard(ticket)
            return ChunkOutcome.VOID
        request = self._retire(ticket, chunk.stamp_ns)
        if request is not None:
            self._latencies.append(now_ns - request.requested_ns)
        if self._stamp_ns is not None and chunk.stamp_ns <= self._stamp_ns:
            return ChunkOutcome.OUT_OF_ORDER
        n = min(self._config.steps_limit(chunk.trained_steps), chunk.horizon)
        dt = chunk.dt_ns
        new = np.asarray(chunk.actions[:n], dtype=np.float64)
        t_new = chunk.stamp_ns + dt * np.arange(n, dtype=np.int64)
        k0 = int(np.searchsorted(t_new, now_ns, side="left"))  # first step with t_k >= now
        if k0 >= n:
            return ChunkOutcome.EXPIRED
        if check is not None:
            why = check(new)
            if why is not None:
                self.last_refusal = why
                self.clear(TickStatus.REFUSED)
                return ChunkOutcome.REFUSED
        if k0 == 0:
            start = new[0]
        else:
            a = (now_ns - int(t_new[k0 - 1])) / dt
            start = new[k0 - 1] + a * (new[k0] - new[k0 - 1])
        if t_new[k0] == now_ns:  # the first remaining step is the seam knot itself
            k0 += 1
        times = np.concatenate(([now_ns], t_new[k0:])).astype(np.int64)
        values = np.concatenate((start[None], new[k0:]), axis=0)
        if self._config.merge is MergeMode.BLEND and self._alive(now_ns):
            window = min(self._config.blend_steps * dt, int(self._times[-1]) - now_ns)  # the overlap
            if window > 0:
                w = np.clip((times - now_ns) / window, 0.0, 1.0)[:, None]
                old = np.stack([self._value_at(int(t)) for t in times])
                values = (1.0 - w) * old + w * values
        # every mode keeps the covering chunks, so a switch to ensemble (runtime parameter) has them
        self._covering = [c for c in self._covering if int(c[1][-1]) >= now_ns]
        self._covering.append((chunk.stamp_ns, t_new, new))
        if self._config.merge is MergeMode.ENSEMBLE:
            values = self._ensemble(times, dt)
        self._times, self._values = times, values
        self._stamp_ns, self._dt_ns = chunk.stamp_ns, dt
        self._span_ns = (n - 1) * dt
        return ChunkOutcome.ACCEPTED

    def _ensemble(self, times: np.ndarray, dt: int) -> np.ndarray:
        """Weighted mean of the covering chunks at each time (module doc, ensemble): each chunk only
        within its usable steps, weight exp(-ensemble_decay * age in steps from the oldest there)."""
        decay = self._config.ensemble_decay
        out = np.empty((len(times), self._covering[-1][2].shape[1]))
        for j, t in enumerate(times):
            t = int(t)
            members = [(stamp, np.array([np.interp(t, ct, cv[:, a]) for a in range(cv.shape[1])]))
                       for stamp, ct, cv in self._covering if ct[0] <= t <= ct[-1]]
            oldest = min(stamp for stamp, _ in members)
            w = np.array([np.exp(-decay * (stamp - oldest) / dt) for stamp, _ in members])
            out[j] = np.tensordot(w, np.stack([v for _, v in members]), axes=1) / w.sum()
        return out

    # -- inference pacing -------------------------------------------------------------------------

    @property
    def inflight(self) -> int:
        """Inference requests started and not yet answered (by on_chunk or inference_failed)."""
        return len(self._pending)

    @property
    def inference_in_flight(self) -> bool:
        return bool(self._pending)

    @property
    def expected_latency_ns(self) -> int | None:
        """Max of the last LATENCY_WINDOW request-to-chunk times; before the first, the latency
        given to ``prime`` (None if none)."""
        return max(self._latencies) if self._latencies else self._primed_latency_ns

    @property
    def tick_period_ns(self) -> int | None:
        """The control period: median of the last TICK_WINDOW positive intervals between ``tick``
        calls (None before two). The median, not the max or the last, so an extra call between
        ticks (a test merging at a finish time) or a stall does not move it."""
        if not self._tick_intervals:
            return None
        return sorted(self._tick_intervals)[len(self._tick_intervals) // 2]

    def lead_ns(self, latency_ns: int) -> float:
        """How long before the coverage ends a request with this latency must start (module doc):
        max((1 + latency_margin) * L, (floor(L / P) + 1) * P), only the first term while the
        control period P is not known; plus ``start_delay_ns``."""
        lead = (1.0 + self._config.latency_margin) * latency_ns
        period = self.tick_period_ns
        if period:
            lead = max(lead, (int(latency_ns) // period + 1) * period)
        return lead + self.start_delay_ns

    def prime(self, latency_ns: int, steps: int, dt_ns: int) -> None:
        """What is known before the first chunk (e.g. from the warm-up): an inference latency and
        the chunks' usable steps (``config.steps_limit(trained_steps)``) and step period.

        Lets overlapping requests be paced from the very first one: the first chunk alone cannot
        cover the time until a request made on its arrival delivers when the latency exceeds half
        a chunk. Measurements replace the latency and accepted chunks the span; with k = 1 nothing
        changes (the first request needs no estimate)."""
        if latency_ns <= 0 or steps <= 0 or dt_ns <= 0:
            raise ValueError(f"prime needs positive values, got latency {latency_ns} ns, steps {steps}, "
                             f"dt {dt_ns} ns")
        self._primed_latency_ns = int(latency_ns)
        if self._span_ns is None:
            self._span_ns = (steps - 1) * dt_ns

    def inference_started(self, now_ns: int, obs_stamp_ns: int | None = None) -> int:
        """Call when an inference request is handed to a worker; returns its ticket.

        obs_stamp_ns: the stamp of the observation it will use (the chunk's future stamp_ns); None
        assumes ``now_ns`` (a request is expected to cover the plan from when it was made)."""
        ticket = self._next_ticket
        self._next_ticket += 1
        self._pending[ticket] = _Request(now_ns, now_ns if obs_stamp_ns is None else obs_stamp_ns)
        return ticket

    def _retire(self, ticket: int | None, stamp_ns: int | None = None) -> _Request | None:
        """Remove a pending request: by ticket; else the one with this observation stamp; else the oldest."""
        if ticket is not None:
            return self._pending.pop(ticket, None)
        if stamp_ns is not None:
            for t, r in self._pending.items():
                if r.obs_stamp_ns == stamp_ns:
                    return self._pending.pop(t)
        if self._pending:
            return self._pending.pop(next(iter(self._pending)))
        return None

    def inference_failed(self, ticket: int | None = None) -> None:
        """Call when a requested inference ends without a chunk (error, chunk refused by the safety
        filter). None retires the oldest pending request."""
        if ticket is not None and ticket in self._void:
            self._void.discard(ticket)
            return
        self._retire(ticket)

    def coverage_end_ns(self) -> int | None:
        """Where the command is planned up to once every pending request has delivered: the max of
        the plan end and, per pending request, its observation stamp + the last chunk's span. None
        when nothing is planned or pending, or a pending request's span is not known yet."""
        ends = [] if self._times is None else [int(self._times[-1])]
        if self._pending:
            if self._span_ns is None:
                return None
            ends += [r.obs_stamp_ns + self._span_ns for r in self._pending.values()]
        return max(ends) if ends else None

    def wants_inference(self, now_ns: int, expected_latency_ns: int | None = None,
                        obs_stamp_ns: int | None = None) -> bool:
        """True when a new request may start now: fewer than max_inflight are pending and the
        coverage (the plan and the pending requests, see coverage_end_ns) ends within the lead
        (``lead_ns`` of the expected latency: (1 + latency_margin) * latency, at least the control
        ticks the chunk takes to be merged) of now.

        With nothing pending this is the one-at-a-time rule (also true with no usable plan or no
        latency known yet). With requests pending it additionally needs the span and a latency
        (measured or primed; else: wait for the first chunk) and the candidate observation
        (obs_stamp_ns, default now) at least expected latency / max_inflight newer than the newest
        pending one, so overlapping requests are spread over the latency instead of bunching (two
        chunks arriving together cover no longer than one)."""
        if len(self._pending) >= self._config.max_inflight:
            return False
        latency = self.expected_latency_ns if expected_latency_ns is None else expected_latency_ns
        lead = None if latency is None else self.lead_ns(latency)
        if not self._pending:
            if not self._alive(now_ns) or lead is None:
                return True
            return self.remaining_ns(now_ns) <= lead
        end = self.coverage_end_ns()
        if end is None or latency is None:
            return False
        newest = max(r.obs_stamp_ns for r in self._pending.values())
        candidate = now_ns if obs_stamp_ns is None else obs_stamp_ns
        if candidate - newest < latency / self._config.max_inflight:
            return False
        return end - now_ns <= lead

    @staticmethod
    def keeps_up(latency_ns: int, steps: int, dt_ns: int, frame_age_ns: int = 0, max_inflight: int = 1) -> bool:
        """Whether a gapless command is possible with up to max_inflight overlapping inferences of
        latency L each: requests can be spaced L / max_inflight apart at best, and the chunk of the
        next request must arrive before the current one ends: L / k + L + age <= (steps - 1) dt
        (k = 1: 2 L + age, the next observation cannot precede the previous chunk's arrival)."""
        return latency_ns * (max_inflight + 1) + max_inflight * frame_age_ns <= max_inflight * (steps - 1) * dt_ns
