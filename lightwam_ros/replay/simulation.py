"""Simulation: the node's controller and bridge on a simulated clock, without DDS.

The one driver behind offline replay (replay/offline.py: events from a bag, on the bag clock) and
the fault and property tests (events scripted at exact times). What runs is what the node runs:
the PolicyController (control/controller.py) built by ros/assembly.py's build_controller, behind
the PolicyBridge (ros/bridge.py) that turns ROS messages into controller events and results into
messages. What differs from the node, and only this:

- the clocks: both the node clock and the pool's monotonic clock are ``SimClock`` -- staleness and
  liveness are judged exactly as live, and a chunk is merged at exactly request + latency;
- the inference pool: ``SimulatedInference`` has InferencePool's interface (submit / poll / busy /
  close, ``workers``) but runs the model synchronously at the request and releases the chunk a
  latency later on the simulated clock, which it asks its ``LatencyModel`` (replay/latency.py:
  fixed, seeded uniform, or drawn from measured samples) for at each request. Deterministic by
  design: a measured wall-clock latency would make the output depend on the machine; give the
  latencies `lightwam bench` measured on the robot's GPU to see how they change which frame sets
  are used. A Simulation that builds its own SimulatedInference primes the scheduler with the
  model's nominal latency instead of the wall-clock warm-up, for the same reason;
- the publishers: whatever the caller passes (bag writer, list recorder);
- no timers: ``run_timers(until)`` runs the control ticks and diagnostics due before ``until`` at
  their periods (control_rate_hz, diagnostics.rate_hz); messages go first on equal times;
- real-time scheduling (control.realtime_priority) is the node's and never applies here.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from lightwam_ros.config import PolicyConfig
from lightwam_ros.control.controller import Clocks, Log, TickResult, Topics
from lightwam_ros.control.safety import HoldReason
from lightwam_ros.control.scheduler import ChunkOutcome
from lightwam_ros.inference.pool import PoolResult
from lightwam_ros.replay.latency import FixedLatency, LatencyModel
from lightwam_ros.ros.assembly import LoadedPolicy, build_controller
from lightwam_ros.ros.bridge import PolicyBridge, Publishers
from lightwam_ros.types import ActionChunk, FrameSet

NODE_NAME = "lightwam_policy"


class SimClock:
    """The simulated clock (integer ns); the driver moves it."""

    def __init__(self, now_ns: int) -> None:
        self.now_ns = int(now_ns)

    def __call__(self) -> int:
        return self.now_ns


@dataclass(frozen=True)
class InferenceRecord:
    """One inference request the controller made, and what came of it."""

    request_ns: int  # simulated time the frame set was handed to the model
    ready_ns: int  # simulated time the result becomes available (request + the latency drawn for it)
    stamp_ns: int  # observation stamp (newest camera stamp of the set)
    spread_ns: int
    instruction: str
    state: np.ndarray  # joint state attached (joints.names order)
    images: dict[str, np.ndarray] | None  # only with keep_frames
    chunk: ActionChunk | None  # full model output (all computed rows)
    error: str | None
    wall_ms: float  # measured wall time of the inference


class SimulatedInference:
    """Drop-in for inference.pool.InferencePool on a simulated clock (see the module doc):
    ``workers`` requests may be pending at once; each finishes the latency its model gives it
    after its submit. ``latency`` is a LatencyModel or a fixed latency in ns; setting
    ``latency_ns`` between requests makes it fixed from then on (tests script it per step)."""

    def __init__(self, predict: Callable[[FrameSet], ActionChunk], clock: SimClock,
                 latency: int | LatencyModel, keep_frames: bool = False, workers: int = 1) -> None:
        self._predict = predict
        self._clock = clock
        self.latency_model: LatencyModel = latency if isinstance(latency, LatencyModel) else \
            FixedLatency.of_ns(latency)
        self._keep = keep_frames
        self._workers = int(workers)
        self._pending: list[tuple[int, PoolResult]] = []  # (ready_ns, result), in submit order
        self.records: list[InferenceRecord] = []

    @property
    def latency_ns(self) -> int | None:
        """The latency of a fixed model (what the next request takes); None for a random one."""
        model = self.latency_model
        return model.next_ns() if isinstance(model, FixedLatency) else None

    @latency_ns.setter
    def latency_ns(self, value: int) -> None:
        self.latency_model = FixedLatency.of_ns(value)

    @property
    def workers(self) -> int:
        return self._workers

    @property
    def busy(self) -> bool:
        return len(self._pending) >= self._workers

    def submit(self, ticket: int | None, frames: FrameSet) -> bool:
        if self.busy:
            return False
        now = self._clock.now_ns
        t0 = time.perf_counter()
        try:
            chunk, error = self._predict(frames), None
        except Exception as exc:  # noqa: BLE001 - the controller reports it and holds, as with the pool
            chunk, error = None, f"{type(exc).__name__}: {exc}"
        wall_ms = 1e3 * (time.perf_counter() - t0)
        ready = now + self.latency_model.next_ns()
        self._pending.append((ready, PoolResult(ticket, frames, chunk, error, ready)))
        self.records.append(InferenceRecord(
            request_ns=now, ready_ns=ready, stamp_ns=frames.stamp_ns, spread_ns=frames.spread_ns,
            instruction=frames.instruction or "", state=np.array(frames.state, dtype=np.float64),
            images=dict(frames.images) if self._keep else None, chunk=chunk, error=error, wall_ms=wall_ms))
        return True

    def poll(self) -> list[PoolResult]:
        """Results ready at the clock's time, in ready order (ties: submit order), each once."""
        now = self._clock.now_ns
        done = sorted((p for p in self._pending if p[0] <= now), key=lambda p: p[0])
        self._pending = [p for p in self._pending if p[0] > now]
        return [r for _, r in done]

    def close(self, timeout: float = 0.0) -> bool:
        self._pending = []
        return True


@dataclass(frozen=True)
class TickRecord:
    """The controller's state after one control tick."""

    t_ns: int
    hold: HoldReason | None
    command: np.ndarray | None  # the command published this tick (a trajectory's first point), or None
    last_commanded: np.ndarray | None  # SafetyFilter.last_commanded after the tick
    queue_steps: int  # plan steps ahead
    accepted_stamps_ns: tuple[int, ...] = ()  # observation stamps of the chunks merged into the plan this tick


def _first_point(result: TickResult) -> np.ndarray | None:
    command = result.command
    if command is None:
        return None
    values = getattr(command, "values", None)
    return np.array(values if values is not None else command.points[0], dtype=np.float64)


def _absolute(topic: str) -> str:
    """A topic as a node in the root namespace resolves it (quoted in errors)."""
    return topic if topic.startswith("/") else "/" + topic.removeprefix("~/")


class Simulation:
    """A controller + bridge on ``clock``; see the module doc. ``inference`` defaults to a
    SimulatedInference of the loaded model with its worker count and ``latency`` (a LatencyModel,
    else fixed ``latency_ns``); the controller's pacing is then primed with the model's nominal
    latency, not the wall-clock warm-up (which would make a run with overlapping requests depend on
    the machine)."""

    def __init__(self, loaded: LoadedPolicy, config: PolicyConfig, publishers: Publishers, clock: SimClock,
                 log: Log, *, latency_ns: int = 0, latency: LatencyModel | None = None, keep_frames: bool = False,
                 inference: Any = None, name: str = NODE_NAME, diagnostics_period_ns: int | None = None) -> None:
        self.clock = clock
        self.config = config
        if inference is None:
            model = latency if latency is not None else FixedLatency.of_ns(latency_ns)
            inference = SimulatedInference(loaded.predict, clock, model, keep_frames, workers=loaded.workers)
            loaded = dataclasses.replace(loaded, warm_ms=model.nominal_ms if model.nominal_ms > 0 else float("nan"))
        self.inference = inference
        topics = Topics(_absolute(config.joints.state_topic), _absolute(config.instruction.topic))
        self.controller = build_controller(loaded, config, self.inference, Clocks(clock, clock), log,
                                           name=f"/{name}", topics=topics)
        self.bridge = PolicyBridge(self.controller, publishers, log, resolve_topic=_absolute,
                                   canvas_for=loaded.canvas_for, decoder=loaded.compressed_decoder())
        self.ticks: list[TickRecord] = []
        self.diagnostics_period_ns = diagnostics_period_ns or round(1e9 / config.diagnostics_rate_hz)
        self.next_tick_ns = clock.now_ns + config.control_period_ns
        self.next_diagnostics_ns = clock.now_ns + self.diagnostics_period_ns

    # -- the node's callbacks, at the clock's current time -------------------------------------------

    def image(self, msg: Any, camera: str, topic: str) -> None:
        self.bridge.on_image(msg, camera, topic)

    def joint_state(self, msg: Any) -> None:
        self.bridge.on_joint_state(msg)

    def instruction(self, msg: Any) -> None:
        self.bridge.on_instruction(msg)

    def tick(self) -> TickRecord | None:
        """One control tick now (None while inactive: the node's timer does not run then)."""
        controller = self.controller
        if not controller.active:
            return None
        result = self.bridge.on_tick()
        now = self.clock.now_ns
        accepted = tuple(f.chunk.stamp_ns for f in result.chunks if f.outcome is ChunkOutcome.ACCEPTED)
        record = TickRecord(now, result.hold, _first_point(result), controller.safety.last_commanded,
                            controller.scheduler.remaining_steps(now), accepted)
        self.ticks.append(record)
        return record

    def diagnostics(self) -> None:
        self.bridge.on_diagnostics()

    # -- lifecycle, services, parameters: what the node's transitions and services call -------------

    def activate(self) -> None:
        """(The tick grid is kept: ticks while inactive do nothing, as the node's timer would not run.)"""
        self.controller.activate()

    def deactivate(self) -> bool:
        return self.bridge.stop()

    def pause(self) -> tuple[bool, str]:
        return self.controller.pause()

    def resume(self) -> tuple[bool, str]:
        return self.controller.resume()

    def set_parameters(self, changes: dict[str, Any]) -> tuple[bool, str]:
        return self.bridge.update_parameters(changes)

    # -- timers --------------------------------------------------------------------------------------

    def run_timers(self, until_ns: int) -> None:
        """Control ticks and diagnostics due strictly before ``until_ns``, in time order (a tick
        before diagnostics on equal times); the clock ends at the last one run."""
        while min(self.next_tick_ns, self.next_diagnostics_ns) < until_ns:
            if self.next_tick_ns <= self.next_diagnostics_ns:
                self.clock.now_ns = self.next_tick_ns
                self.tick()
                self.next_tick_ns += self.controller.config.control_period_ns
            else:
                self.clock.now_ns = self.next_diagnostics_ns
                self.diagnostics()
                self.next_diagnostics_ns += self.diagnostics_period_ns

    def shift_timers(self, delta_ns: int) -> None:
        """Move the pending timers with a clock jump (a /clock restart, a looping bag)."""
        self.next_tick_ns += delta_ns
        self.next_diagnostics_ns += delta_ns

    def close(self) -> None:
        self.controller.close(0.0)
