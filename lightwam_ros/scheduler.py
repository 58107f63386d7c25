"""ChunkScheduler: turns action chunks into a command per control tick, on a simulated clock.

API
- ``ChunkScheduler(config: ChunkConfig)``
- ``on_chunk(chunk: ActionChunk, now_ns) -> ChunkOutcome`` -- merge a new chunk (answers the
  pending inference request whatever the outcome).
- ``tick(now_ns) -> Tick`` -- the action for this control tick, or None with the TickStatus why.
- ``wants_inference(now_ns, expected_latency_ns=None) -> bool``; ``inference_started(now_ns)``,
  ``inference_failed()`` -- bracket each inference request.
- ``upcoming(now_ns, max_steps=0) -> np.ndarray [m, A]`` -- the plan at now + (k+1)*dt, k < m (what a
  JointTrajectory carries).
- ``remaining_ns(now_ns)``, ``remaining_steps(now_ns)``, ``expected_latency_ns``, ``dt_ns``,
  ``keeps_up(latency_ns, steps, dt_ns)``
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

Inference pacing: ``wants_inference`` is true when nothing is in flight and the plan ends within
(1 + latency_margin) * expected latency (or there is no usable plan). The expected latency is the
max of the last LATENCY_WINDOW measured request-to-chunk times unless the caller passes one. With
one inference in flight at a time, a chunk whose last step ends D after its observation and an
inference latency L (request to chunk), the command is gapless only if about 2 L + frame age <= D:
the next observation cannot be taken before the previous chunk arrives. ``keeps_up`` states this.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import Enum

import numpy as np

from lightwam_ros.config import ChunkConfig, MergeMode
from lightwam_ros.types import ActionChunk

LATENCY_WINDOW = 10  # request-to-chunk latencies kept for the expected latency (max of them)


class TickStatus(Enum):
    OK = "ok"
    EMPTY = "empty"  # no chunk accepted yet (or after reset)
    EXHAUSTED = "exhausted"  # the plan ended before a new chunk arrived
    REFUSED = "refused"  # plan dropped by clear() after a refused chunk, until the next accepted one


class ChunkOutcome(Enum):
    ACCEPTED = "accepted"
    OUT_OF_ORDER = "out_of_order"  # stamp not newer than the chunk in flight
    EXPIRED = "expired"  # every usable step had already elapsed on arrival


@dataclass(frozen=True)
class Tick:
    action: np.ndarray | None  # float64 [A], None unless status is OK
    status: TickStatus
    remaining_steps: int  # plan knots still ahead of now (the queue depth)


class ChunkScheduler:
    """Holds the plan in flight and hands out one interpolated action per control tick."""

    def __init__(self, config: ChunkConfig):
        self._config = config
        self._latencies: deque[int] = deque(maxlen=LATENCY_WINDOW)
        self.reset()

    def reset(self) -> None:
        """Forget the plan, the last stamp and any pending request (e.g. on activation)."""
        self._times: np.ndarray | None = None  # int64 [n] knot times, strictly increasing
        self._values: np.ndarray | None = None  # float64 [n, A]
        self._stamp_ns: int | None = None  # observation stamp of the last accepted chunk
        self._dt_ns: int | None = None
        self._status_if_none = TickStatus.EMPTY
        self._requested_at: int | None = None

    def reconfigure(self, config: ChunkConfig) -> None:
        """New merge/limit/margin settings apply from the next chunk; the plan in flight is kept."""
        self._config = config

    def clear(self, status: TickStatus = TickStatus.REFUSED) -> None:
        """Drop the plan (e.g. the safety filter refused a chunk); tick reports ``status`` until the
        next accepted chunk. The last stamp is kept, so older chunks stay refused."""
        self._times = self._values = None
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
        """The action for the control tick at now_ns (see the module doc for the alignment)."""
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

    def on_chunk(self, chunk: ActionChunk, now_ns: int) -> ChunkOutcome:
        """Merge ``chunk`` (arrived at now_ns) into the plan; see the module doc for the rules."""
        if self._requested_at is not None:
            self._latencies.append(now_ns - self._requested_at)
            self._requested_at = None
        if self._stamp_ns is not None and chunk.stamp_ns <= self._stamp_ns:
            return ChunkOutcome.OUT_OF_ORDER
        n = min(self._config.steps_limit(chunk.trained_steps), chunk.horizon)
        dt = chunk.dt_ns
        new = np.asarray(chunk.actions[:n], dtype=np.float64)
        t_new = chunk.stamp_ns + dt * np.arange(n, dtype=np.int64)
        k0 = int(np.searchsorted(t_new, now_ns, side="left"))  # first step with t_k >= now
        if k0 >= n:
            return ChunkOutcome.EXPIRED
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
        self._times, self._values = times, values
        self._stamp_ns, self._dt_ns = chunk.stamp_ns, dt
        return ChunkOutcome.ACCEPTED

    # -- inference pacing -------------------------------------------------------------------------

    @property
    def inference_in_flight(self) -> bool:
        return self._requested_at is not None

    @property
    def expected_latency_ns(self) -> int | None:
        """Max of the last LATENCY_WINDOW request-to-chunk times (None before the first chunk)."""
        return max(self._latencies) if self._latencies else None

    def inference_started(self, now_ns: int) -> None:
        """Call when an inference request is handed to the worker."""
        self._requested_at = now_ns

    def inference_failed(self) -> None:
        """Call when a requested inference ends without a chunk (error, no fresh observation)."""
        self._requested_at = None

    def wants_inference(self, now_ns: int, expected_latency_ns: int | None = None) -> bool:
        """True when no inference is in flight and the plan would run dry before a chunk requested
        now could arrive: remaining <= (1 + latency_margin) * expected latency, or no usable plan."""
        if self._requested_at is not None:
            return False
        if not self._alive(now_ns):
            return True
        latency = self.expected_latency_ns if expected_latency_ns is None else expected_latency_ns
        if latency is None:
            return True
        return self.remaining_ns(now_ns) <= (1.0 + self._config.latency_margin) * latency

    @staticmethod
    def keeps_up(latency_ns: int, steps: int, dt_ns: int, frame_age_ns: int = 0) -> bool:
        """Whether a gapless command is possible with one inference at a time: the chunk requested
        when the previous one arrives must arrive before that one ends (2 L + age <= (steps-1) dt)."""
        return 2 * latency_ns + frame_age_ns <= (steps - 1) * dt_ns
