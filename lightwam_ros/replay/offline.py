"""Offline replay: the real PolicyNode driven on the bag clock, without DDS traffic.

What runs is the node itself (lightwam_ros.ros.node.PolicyNode, configured from the profile exactly as a
launch would: same params file, same bundle verification and warm-up), and its own callbacks are
called in bag order: ``_on_image`` / ``_on_joint_state`` / ``_on_instruction`` at each message's
record time, ``_on_control_tick`` every control period and ``_on_diagnostics`` at the diagnostics
rate. So FrameSync, image decoding, the PolicyPipeline, the ChunkScheduler, the SafetyFilter, holds
and message building are the node's code, not a re-implementation. Three things are swapped, and
only these:

- the clock: ``_now_ns`` returns the bag clock (the record time of the message being delivered, or
  the tick time), so staleness and liveness decisions are those the node would make live;
- the inference worker: ``SimulatedInference`` has the node's InferencePool interface (submit /
  poll / busy / close, with the same worker count) but runs the model synchronously at the request
  and releases the chunk ``latency`` later on the bag clock; the node's monotonic clock
  (``_mono_ns``) is the bag clock too, so a chunk is merged at exactly request + latency, as the
  node merges a chunk at its worker's finish time. Latency model (deterministic by design): a
  fixed latency, default 0 ("instantaneous": the chunk is collected at the first control tick
  after the request). A measured wall-clock latency would make the output depend on the machine;
  give --latency the value `lightwam bench` measured on the robot's GPU to see how a real latency
  changes which frame sets are used;
- real-time scheduling: control.realtime_priority is forced to 0 (the ticks run on the replay's
  main thread, which must not become SCHED_FIFO);
- the publishers: they serialize into the output bag at the bag-clock time instead of DDS.

A DDS participant exists (rclpy needs one for a node) but no data is sent or received: the
executor is never spun.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from lightwam_ros.config import PolicyConfig
from lightwam_ros.control.sync import DropReason
from lightwam_ros.inference.pool import PoolResult
from lightwam_ros.replay.bags import BagReader
from lightwam_ros.replay.metrics import percentiles
from lightwam_ros.replay.runner import (
    IMAGE,
    STRING,
    FrameSetCounter,
    InputTopics,
    OutputRecorder,
    OutputTopics,
    ReplayError,
    ReplayOptions,
    input_stream,
    msgtype_of,
)
from lightwam_ros.types import ActionChunk, FrameSet

log = logging.getLogger(__name__)
MAX_INTERVALS = 500  # hold intervals listed in the report


class SimClock:
    """The bag clock the node sees (integer ns)."""

    def __init__(self, now_ns: int) -> None:
        self.now_ns = int(now_ns)


@dataclass(frozen=True)
class InferenceRecord:
    """One inference request the node made, and what came of it."""

    request_ns: int  # bag time the node handed the frame set to the model
    ready_ns: int  # bag time the result becomes available (request + simulated latency)
    stamp_ns: int  # observation stamp (newest camera stamp of the set)
    spread_ns: int
    instruction: str
    state: np.ndarray  # joint state the node attached (joints.names order)
    images: dict[str, np.ndarray] | None  # only with ReplayOptions.keep_frames
    chunk: ActionChunk | None  # full model output (all computed rows)
    error: str | None
    wall_ms: float  # measured wall time of the inference


@dataclass(frozen=True)
class TickRecord:
    """The node's state after one control tick."""

    t_ns: int
    hold: Any  # HoldReason | None
    command: np.ndarray | None  # SafetyFilter.last_commanded after the tick
    queue_steps: int


class SimulatedInference:
    """Drop-in for inference_worker.InferencePool on a simulated clock (see the module doc):
    ``workers`` requests may be pending at once; each finishes ``latency_ns`` after its submit."""

    def __init__(self, predict: Callable[[FrameSet], ActionChunk], clock: SimClock, latency_ns: int,
                 keep_frames: bool = False, workers: int = 1) -> None:
        self._predict = predict
        self._clock = clock
        self._latency_ns = int(latency_ns)
        self._keep = keep_frames
        self._workers = int(workers)
        self._pending: list[tuple[int, PoolResult]] = []  # (ready_ns, result), in submit order
        self.records: list[InferenceRecord] = []

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
        except Exception as exc:  # noqa: BLE001 - the node reports it and holds, as with its own worker
            chunk, error = None, f"{type(exc).__name__}: {exc}"
        wall_ms = 1e3 * (time.perf_counter() - t0)
        ready = now + self._latency_ns
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


def simulate_inference(node: Any, clock: SimClock, latency_ns: int, keep_frames: bool = False) -> SimulatedInference:
    """Replace a configured node's inference pool by a SimulatedInference with the same worker
    count, put the node's monotonic clock on ``clock`` (chunks merge at exactly request + latency)
    and turn off SCHED_FIFO for the control tick (it runs on the caller's thread)."""
    rt = node.runtime
    rt.worker.close()
    pipeline = rt.pipeline
    worker = SimulatedInference(lambda fs: pipeline.predict(fs.images, fs.state, fs.instruction, fs.stamp_ns),
                                clock, latency_ns, keep_frames, workers=rt.workers)
    rt.worker = worker
    node._mono_ns = lambda: clock.now_ns  # noqa: SLF001 - the pool's finish times are on the sim clock
    rt.config = dataclasses.replace(rt.config, realtime=dataclasses.replace(rt.config.realtime, priority=0))
    return worker


class RecordingPublisher:
    """Drop-in for an rclpy publisher: serializes into the output bag at the bag-clock time."""

    def __init__(self, recorder: OutputRecorder, topic: str, clock: SimClock) -> None:
        from rclpy.serialization import serialize_message

        self._serialize = serialize_message
        self._recorder, self._topic, self._clock = recorder, topic, clock

    def publish(self, msg: Any) -> None:
        self._recorder.write(self._topic, msgtype_of(msg), self._clock.now_ns, self._serialize(msg))

    def get_subscription_count(self) -> int:
        return 1  # "someone listens": the recorder takes everything, like a live recording


def hold_intervals(ticks: list[TickRecord], origin_ns: int) -> list[dict[str, Any]]:
    """Consecutive ticks with the same hold reason -> [{hold, start_s, end_s, ticks}]."""
    out: list[dict[str, Any]] = []
    for tk in ticks:
        name = tk.hold.value if tk.hold is not None else "none"
        if out and out[-1]["hold"] == name:
            out[-1]["end_s"] = (tk.t_ns - origin_ns) / 1e9
            out[-1]["ticks"] += 1
        else:
            t = (tk.t_ns - origin_ns) / 1e9
            out.append({"hold": name, "start_s": t, "end_s": t, "ticks": 1})
    return out


def run_offline(options: ReplayOptions, plan: Any, cfg: PolicyConfig, inputs: InputTopics, topics: OutputTopics,
                recorder: OutputRecorder, start_ns: int, stop_ns: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Drive a PolicyNode through [start_ns, stop_ns) of the bag; returns (report part, extras)."""
    import rclpy
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.serialization import deserialize_message
    from rclpy.signals import SignalHandlerOptions
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import String

    from lightwam_ros.ros.node import PolicyNode

    clock = SimClock(start_ns)
    ctx = rclpy.Context()
    with tempfile.TemporaryDirectory(prefix="lightwam_replay_") as tmp:
        params = plan.write_params_file(tmp)
        rclpy.init(args=["lightwam_replay", *plan.ros_arguments(params)], context=ctx,
                   signal_handler_options=SignalHandlerOptions.NO)
    try:
        node = PolicyNode(context=ctx)
        node._now_ns = lambda: clock.now_ns  # noqa: SLF001 - the node's only clock accessor
        t_cfg = time.perf_counter()
        if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            raise ReplayError(f"the policy node failed to configure from --profile {options.profile} "
                              "(the node's error above names the parameter or file)")
        configure_s = time.perf_counter() - t_cfg
        rt = node.runtime
        worker = simulate_inference(node, clock, round(options.latency_ms * 1e6), options.keep_frames)
        rt.chunk_pub = RecordingPublisher(recorder, topics.action_chunk, clock)
        rt.canvas_pub = RecordingPublisher(recorder, topics.canvas, clock)
        rt.diag_pub = RecordingPublisher(recorder, topics.diagnostics, clock)
        if rt.output_pub is not None and topics.output:
            rt.output_pub = RecordingPublisher(recorder, topics.output, clock)
        if node.trigger_activate() != TransitionCallbackReturn.SUCCESS:
            raise ReplayError("the policy node failed to activate")

        counter = FrameSetCounter(inputs.cameras, cfg.sync, start_ns)
        ticks: list[TickRecord] = []
        tick_ns = cfg.control_period_ns
        diag_ns = round(1e9 / cfg.diagnostics_rate_hz)
        next_tick, next_diag = start_ns + tick_ns, start_ns + diag_ns
        types = {IMAGE: Image, "sensor_msgs/msg/JointState": JointState, STRING: String}

        def run_timers(until_ns: int) -> None:
            """Control ticks and diagnostics due strictly before until_ns (messages first on ties)."""
            nonlocal next_tick, next_diag
            while min(next_tick, next_diag) < until_ns:
                if next_tick <= next_diag:
                    clock.now_ns = next_tick
                    node._on_control_tick()  # noqa: SLF001
                    last = rt.safety.last_commanded
                    ticks.append(TickRecord(next_tick, rt.hold, last, rt.scheduler.remaining_steps(next_tick)))
                    next_tick += tick_ns
                else:
                    clock.now_ns = next_diag
                    node._on_diagnostics()  # noqa: SLF001
                    next_diag += diag_ns

        wall0 = time.perf_counter()
        delivered: Counter[str] = Counter()
        with BagReader(options.bag) as reader:
            for t_ns, msg in input_stream(reader, inputs, start_ns, stop_ns):
                run_timers(t_ns)
                clock.now_ns = t_ns
                decoded = deserialize_message(msg.raw, types[inputs.msgtype[msg.topic]])
                delivered[msg.topic] += 1
                if msg.topic in inputs.cameras:
                    counter.add(msg, t_ns)
                    node._on_image(decoded, inputs.cameras[msg.topic], inputs.node_topic[msg.topic])  # noqa: SLF001
                elif msg.topic == inputs.joint_states:
                    node._on_joint_state(decoded)  # noqa: SLF001
                else:
                    node._on_instruction(decoded)  # noqa: SLF001
        run_timers(stop_ns)
        wall_s = time.perf_counter() - wall0
        clock.now_ns = stop_ns
        node._on_diagnostics()  # noqa: SLF001 - the output bag always ends with the final counters
        sync = rt.sync.stats()
        safety = rt.safety.stats()
        node.trigger_deactivate()  # sends the final hold, as a lifecycle manager stopping the node would
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=ctx)

    records = worker.records
    failed = [r for r in records if r.chunk is None]
    holds = Counter(tk.hold.value if tk.hold is not None else "none" for tk in ticks)
    bag_s = (stop_ns - start_ns) / 1e9
    report = {
        "frame_sets": {
            "in_bag": counter.sets,
            "formed": sync.sets_formed,
            "fresh": sync.sets_emitted,
            "used": len(records),
            "dropped": {
                "stale": sync.drops[DropReason.STALE],
                "unused": sync.sets_emitted - len(records),
            },
            "dropped_note": ("stale: matched but older than sync.max_age when formed; unused: fresh but "
                             "replaced by a newer set before the scheduler asked for a chunk, or formed while "
                             "the node held (stale joint state, no instruction) -- one set is used per chunk"),
            "frame_drops": {r.value: n for r, n in sync.drops.items() if n and r is not DropReason.STALE},
            "frames": dict(sync.arrivals),
            "delivered_messages": dict(delivered),
        },
        "holds": {
            "ticks": len(ticks),
            "by_reason": dict(holds),
            "intervals": hold_intervals(ticks, start_ns)[:MAX_INTERVALS],
        },
        "inference": {
            "requests": len(records),
            "failed": len(failed),
            "errors": sorted({r.error for r in failed})[:10],
            "latency_model": {"kind": "fixed" if options.latency_ms > 0 else "instantaneous",
                              "latency_ms": options.latency_ms,
                              "note": "chunks are merged at the first control tick at or after request + latency"},
            "wall_ms": percentiles(r.wall_ms for r in records),
        },
        "safety": safety,
        "throughput": {
            "configure_s": round(configure_s, 3),
            "wall_s": round(wall_s, 3),
            "bag_s": bag_s,
            "frame_sets_per_s": round(sync.sets_formed / wall_s, 2) if wall_s > 0 else None,
            "realtime_factor": round(bag_s / wall_s, 3) if wall_s > 0 else None,
        },
    }
    extras = {"requests": records, "ticks": ticks,
              "timed_chunks": [r.chunk for r in records if r.chunk is not None]}
    return report, extras
