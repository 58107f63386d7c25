"""Offline replay: the node's controller driven on the bag clock, without DDS traffic.

What runs is what the node runs (replay/simulation.py): the profile's PolicyConfig, the bundle
loaded, verified and warmed up exactly as configure does (ros/assembly.py's load_policy), the
PolicyController with FrameSync, the ChunkScheduler, the SafetyFilter and holds, behind the
PolicyBridge that decodes the bag's messages and builds the output messages. Its callbacks are
called in bag order, each at its message's record time, with the control ticks and diagnostics at
their periods in between. What differs from the node (see replay/simulation.py): the clock is the
bag clock, inference is SimulatedInference (the model runs synchronously at the request and its
chunk is released a simulated latency later on the bag clock, from the latency model the options
ask for -- replay/latency.py: ``--latency`` fixed, with ``--latency-jitter`` uniform, or drawn from
``--latency-file``, seeded by ``--seed``; default 0: collected at the first control tick after the
request), and the publishers serialize into the output bag at the bag-clock time.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from lightwam_ros.config import ConfigError, PolicyConfig
from lightwam_ros.control.logs import ThrottledLogger
from lightwam_ros.control.sync import DropReason
from lightwam_ros.replay.bags import BagReader
from lightwam_ros.replay.latency import latency_model
from lightwam_ros.replay.metrics import percentiles
from lightwam_ros.replay.options import ReplayError, ReplayOptions
from lightwam_ros.replay.simulation import SimClock, Simulation, TickRecord
from lightwam_ros.replay.streams import (
    COMPRESSED_IMAGE,
    IMAGE,
    STRING,
    FrameSetCounter,
    InputTopics,
    OutputRecorder,
    OutputTopics,
    input_stream,
    msgtype_of,
)
from lightwam_ros.replay.undecodable import InputDecoder
from lightwam_ros.ros.assembly import load_policy
from lightwam_ros.ros.bridge import Publishers

log = logging.getLogger(__name__)
MAX_INTERVALS = 500  # hold intervals listed in the report


class RecordingPublisher:
    """Stands in for an rclpy publisher: serializes into the output bag at the bag-clock time."""

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


def chunk_merges(ticks: Sequence[TickRecord]) -> list[tuple[int, int]]:
    """(index of the tick that merged it, observation stamp) of every chunk the controller accepted
    into its plan, in merge order -- what the controller reported at each tick, so the handovers are
    the scheduler's own decisions, not a re-derivation of them."""
    return [(i, int(s)) for i, tk in enumerate(ticks) for s in tk.accepted_stamps_ns]


def run_offline(options: ReplayOptions, plan: Any, cfg: PolicyConfig, inputs: InputTopics, topics: OutputTopics,
                recorder: OutputRecorder, start_ns: int, stop_ns: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Drive the controller through [start_ns, stop_ns) of the bag; returns (report part, extras)."""
    from sensor_msgs.msg import CompressedImage, Image, JointState
    from std_msgs.msg import String

    clock = SimClock(start_ns)
    messages = ThrottledLogger(log)
    latency = latency_model(options.latency_ms, options.latency_jitter_ms, options.latency_file, options.seed)
    t_cfg = time.perf_counter()
    try:
        loaded = load_policy(cfg, messages)
    except ConfigError as exc:
        raise ReplayError(f"--profile {options.profile}: {exc}") from exc
    except Exception as exc:
        raise ReplayError(f"the policy failed to load from --profile {options.profile}: "
                          f"{type(exc).__name__}: {exc}") from exc
    configure_s = time.perf_counter() - t_cfg
    try:
        output = RecordingPublisher(recorder, topics.output, clock) if topics.output else None
        publishers = Publishers(output=output, action_chunk=RecordingPublisher(recorder, topics.action_chunk, clock),
                                canvas=RecordingPublisher(recorder, topics.canvas, clock),
                                diagnostics=RecordingPublisher(recorder, topics.diagnostics, clock))
        sim = Simulation(loaded, cfg, publishers, clock, messages, latency=latency, keep_frames=options.keep_frames)
        sim.activate()
        counter = FrameSetCounter(inputs.cameras, cfg.sync, start_ns)
        types = {IMAGE: Image, COMPRESSED_IMAGE: CompressedImage, "sensor_msgs/msg/JointState": JointState,
                 STRING: String}
        wall0 = time.perf_counter()
        delivered: Counter[str] = Counter()
        with BagReader(options.bag) as reader:
            decoder = InputDecoder(types, reader.info.start_ns)
            for t_ns, msg in input_stream(reader, inputs, start_ns, stop_ns):
                sim.run_timers(t_ns)
                clock.now_ns = t_ns
                decoded = decoder.decode(msg, inputs.msgtype[msg.topic])
                if decoded is None:  # counted for the report, logged once per topic
                    continue
                delivered[msg.topic] += 1
                if msg.topic in inputs.cameras:
                    counter.add(msg, t_ns)
                    sim.image(decoded, inputs.cameras[msg.topic], inputs.node_topic[msg.topic])
                elif msg.topic == inputs.joint_states:
                    sim.joint_state(decoded)
                else:
                    sim.instruction(decoded)
        sim.run_timers(stop_ns)
        wall_s = time.perf_counter() - wall0
        clock.now_ns = stop_ns
        sim.diagnostics()  # the output bag always ends with the final counters
        controller = sim.controller
        sync = controller.sync.stats()
        safety = controller.safety.stats()
        sim.deactivate()  # sends the final hold, as a lifecycle manager stopping the node would
        sim.close()
    finally:
        loaded.close()
    ticks = sim.ticks
    worker = sim.inference

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
        "undecodable": decoder.counts(),
        "holds": {
            "ticks": len(ticks),
            "by_reason": dict(holds),
            "intervals": hold_intervals(ticks, start_ns)[:MAX_INTERVALS],
        },
        "inference": {
            "requests": len(records),
            "failed": len(failed),
            "errors": sorted({r.error for r in failed})[:10],
            "latency_model": latency.describe(),
            "simulated_latency_ms": percentiles((r.ready_ns - r.request_ns) / 1e6 for r in records),
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
