"""Rosbag replay through the policy node, offline or live, with a report, an output bag and a plot.

    lightwam replay --bag DIR --profile YAML --bundle DIR --out DIR [--mode offline|live] ...

Both modes run the node's own code -- the PolicyController with its FrameSync, ChunkScheduler and
SafetyFilter behind the PolicyBridge's image decoding and message builders, on the PolicyPipeline --
and record what it publishes (~/action_chunk, the output topic, ~/debug/canvas, /diagnostics) into
OUT/outputs (MCAP):

- offline (offline.py, simulation.py): the bridge's callbacks are called in bag order on the bag
  clock (record times), no data goes over DDS, and inference is simulated with a deterministic
  latency model on the bag clock (replay/latency.py: fixed `--latency`, uniform with
  `--latency-jitter`, or drawn from `--latency-file`, seeded by `--seed`). Deterministic: the same
  bag, profile, bundle and latency model give the same chunks.
- live (live.py): the bag's inputs are published over real DDS as raw CDR with their original
  timing (scaled by --rate) and a simulated /clock, to a PolicyNode running in its own process
  with use_sim_time, exactly as `ros2 bag play --clock` would feed a robot's node.

OUT/report.json says what happened (frame sets formed / used / dropped and why, holds, chunks,
latency percentiles, open-loop error against the recorded joint states or commands and, offline,
the executed motion and chunk seams) and OUT/plot.png shows predicted chunks against the recording
(offline: with the chunk handovers marked).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lightwam_ros.config import ConfigError, PolicyConfig, from_params
from lightwam_ros.replay.bags import BagInfo, BagReader, find_topic, read_bag_info, resolve_name
from lightwam_ros.replay.live import run_live
from lightwam_ros.replay.metrics import (
    ReferenceTrack,
    command_track,
    json_safe,
    latency_summary,
    motion_report,
    open_loop_error,
    percentiles,
    plot_replay,
    reference_track,
)
from lightwam_ros.replay.offline import chunk_merges, run_offline
from lightwam_ros.replay.options import ReplayError, ReplayMode, ReplayOptions
from lightwam_ros.replay.streams import (
    InputTopics,
    OutputRecorder,
    OutputTopics,
    map_inputs,
    output_topics,
    replay_window,
)
from lightwam_ros.ros.launch_config import LaunchConfigError, plan_from_arguments
from lightwam_ros.types import ActionChunk

log = logging.getLogger(__name__)

REPORT = "report.json"
PLOT = "plot.png"


# --- run --------------------------------------------------------------------------------------
@dataclass
class ReplayResult:
    """What a replay produced; ``report`` is what report.json holds."""

    report: dict[str, Any]
    out: Path
    output_bag: Path
    report_path: Path
    plot_path: Path | None
    chunks: list[ActionChunk]  # as published on ~/action_chunk (executable rows), in order
    requests: list[Any] = field(default_factory=list)  # offline: InferenceRecord per inference
    ticks: list[Any] = field(default_factory=list)  # offline: TickRecord per control tick


def node_plan(options: ReplayOptions) -> tuple[Any, PolicyConfig]:
    """The node's launch plan (profile + bundle override + namespace) and its validated config."""
    args = {"robot": str(options.profile), "namespace": options.namespace, "dds_profile": options.dds_profile}
    if options.bundle:
        args["bundle"] = str(Path(options.bundle).expanduser().resolve())
    try:
        plan = plan_from_arguments(args)
        cfg = from_params(plan.parameters)
    except (ConfigError, LaunchConfigError) as exc:
        raise ReplayError(f"--profile {options.profile}: {exc}") from None
    return plan, cfg


def run_replay(options: ReplayOptions) -> ReplayResult:
    """Replay ``options.bag`` through the node in ``options.mode``; write outputs, report and plot."""
    plan, cfg = node_plan(options)
    if options.output_bag.exists():
        raise ReplayError(f"--out {options.out}: {options.output_bag} already exists; choose a new directory")
    options.out.mkdir(parents=True, exist_ok=True)
    info = read_bag_info(options.bag)
    inputs = map_inputs(info, cfg, options.namespace)
    start_ns, stop_ns = replay_window(info, options.start_s, options.duration_s)
    topics = output_topics(cfg, options.namespace)
    recorder = OutputRecorder(options.output_bag)
    try:
        if options.mode is ReplayMode.OFFLINE:
            mode_report, extras = run_offline(options, plan, cfg, inputs, topics, recorder, start_ns, stop_ns)
        else:
            mode_report, extras = run_live(options, plan, cfg, inputs, topics, recorder, start_ns, stop_ns)
    finally:
        recorder.close()
    return finish_report(options, cfg, info, inputs, topics, start_ns, stop_ns, mode_report, extras)


# --- report -----------------------------------------------------------------------------------
def recorded_chunks(output_bag: Path, topic: str, trained_steps: int | None = None) -> list[tuple[int, ActionChunk]]:
    """(publish time, chunk) of every ~/action_chunk message in the output bag."""
    from rclpy.serialization import deserialize_message
    from trajectory_msgs.msg import JointTrajectory

    from lightwam_ros.ros.outputs import action_chunk_from_msg

    out = []
    with BagReader(output_bag) as reader:
        if topic not in reader.info.topics:
            return []
        for m in reader.messages([topic]):
            stamp, dt, actions, _ = action_chunk_from_msg(deserialize_message(m.raw, JointTrajectory))
            if dt is None or len(actions) == 0:
                continue
            n = len(actions)
            out.append((m.log_ns, ActionChunk(actions=actions, stamp_ns=stamp, dt_ns=dt,
                                               trained_steps=min(n, trained_steps or n))))
    return out


def _reference(options: ReplayOptions, cfg: PolicyConfig, info: BagInfo, inputs: InputTopics,
               start_ns: int, stop_ns: int, horizon_ns: int) -> tuple[ReferenceTrack | None, str | None]:
    """The recorded track to score against, or (None, why not)."""
    names = cfg.output.joint_names
    if options.reference_topic:
        topic = resolve_name(options.reference_topic, options.namespace)
        if topic not in info.topics:
            topic = find_topic(info, options.reference_topic, None, options.namespace, what="--reference")
    else:
        topic = inputs.joint_states
    with BagReader(options.bag) as reader:
        try:
            track = reference_track(reader, topic, names, start_ns, stop_ns + horizon_ns)
        except ValueError as exc:
            return None, str(exc)
    missing = [n for n, col in zip(names, track.positions.T) if not np.isfinite(col).any()]
    if len(track) == 0:
        return None, f"reference topic {topic} has no messages in the replay window"
    if len(missing) == len(names):
        return None, (f"reference topic {topic} records none of the action dims {list(names)} "
                      "(output.joint_names); open-loop error needs joint-space actions")
    return track, None


def motion(options: ReplayOptions, cfg: PolicyConfig, extras: dict[str, Any], origin_ns: int) -> dict[str, Any]:
    """report.json's ``motion`` (metrics.motion_report) from the offline tick and inference records,
    or ``available: false`` and why.

    The executed command of a tick is the safety filter's last command after it (what the node
    commanded for that instant: the forward value, or for a trajectory controller the point of the
    plan it is executing -- a JointTrajectory is only published when the plan changes); a tick
    that commanded nothing (a silent hold) has none."""
    if options.mode is not ReplayMode.OFFLINE:
        return {"available": False, "reason": "live replay sees only what the node published over DDS, not its "
                "per-tick commands, holds and chunk merges; run --mode offline on the same bag"}
    if not cfg.output.holds_by_repeating:
        return {"available": False, "reason": "output.action_space is delta: the commands are increments, "
                "not positions, so their differences are not the joints' motion"}
    ticks = extras.get("ticks") or []
    if not ticks:
        return {"available": False, "reason": "no control ticks in the replay window"}
    names = cfg.output.joint_names
    merges = chunk_merges(ticks)
    nan = np.full(len(names), np.nan)
    commands = np.stack([nan if tk.last_commanded is None else np.asarray(tk.last_commanded, dtype=np.float64)
                         for tk in ticks])
    report = motion_report(np.asarray([tk.t_ns for tk in ticks], dtype=np.int64), commands,
                           np.asarray([tk.hold is None for tk in ticks]), [i for i, _ in merges],
                           [s for _, s in merges], cfg.control_period_ns, names, origin_ns)
    return report


def finish_report(options: ReplayOptions, cfg: PolicyConfig, info: BagInfo, inputs: InputTopics,
                  topics: OutputTopics, start_ns: int, stop_ns: int, mode_report: dict[str, Any],
                  extras: dict[str, Any]) -> ReplayResult:
    """Scores the recorded chunks, draws the plot and writes report.json."""
    published = recorded_chunks(options.output_bag, topics.action_chunk)
    chunks = [c for _, c in published]
    horizon = max((c.dt_ns * c.horizon for c in chunks), default=0)
    track, why = _reference(options, cfg, info, inputs, start_ns, stop_ns, horizon)
    commands = None
    with BagReader(options.output_bag) as out_reader:
        counts = {t: i.count for t, i in out_reader.info.topics.items()}
        if topics.output and topics.output in out_reader.info.topics:
            cmd = command_track(out_reader, topics.output, cfg.output.joint_names)
            commands = (cmd.times_ns, cmd.positions)
    ages = [(t - c.stamp_ns) / 1e6 for t, c in published]
    report: dict[str, Any] = {
        "mode": options.mode.value,
        "bag": str(options.bag),
        "bag_storage": info.storage,
        "bag_version": info.version,
        "profile": str(options.profile),
        "bundle": cfg.bundle,
        "window": {"start_s": (start_ns - info.start_ns) / 1e9, "duration_s": (stop_ns - start_ns) / 1e9,
                   "start_ns": start_ns, "stop_ns": stop_ns},
        "inputs": {"cameras": {inputs.cameras[t]: t for t in inputs.cameras},
                   "joint_states": inputs.joint_states, "instruction": inputs.instruction},
        **mode_report,
        "chunks": {
            "published": len(chunks),
            "steps_published": chunks[0].horizon if chunks else 0,
            "observation_to_publish_ms": percentiles(ages),
            "stamps_ns": [c.stamp_ns for c in chunks],
        },
        "outputs": {"bag": str(options.output_bag), "topics": counts},
    }
    if track is not None and track.undecodable:  # a --reference topic that is no input; an input counts once
        report.setdefault("undecodable", {}).setdefault(track.topic, track.undecodable)
    timed = extras.get("timed_chunks") or []
    if timed:
        report["latency_ms"] = latency_summary(timed)
    if track is not None and chunks:
        report["open_loop_error"] = open_loop_error(chunks, track)
    else:
        report["open_loop_error"] = {"available": False,
                                     "reason": why or "no chunks were published"}
    report["motion"] = motion(options, cfg, extras, info.start_ns)
    handovers = [info.start_ns + round(1e9 * t) for t in report["motion"].get("handover_bag_times_s", [])]
    plot_path = None
    if options.plot:
        plot_path = plot_replay(options.out / PLOT, cfg.output.joint_names, chunks, track, commands,
                                origin_ns=info.start_ns, handovers_ns=handovers,
                                title=f"{options.bag.name}: {options.mode.value} replay, {len(chunks)} chunks")
        report["plot"] = str(plot_path)
    report_path = options.out / REPORT
    report_path.write_text(json.dumps(json_safe(report), indent=2))
    return ReplayResult(report=report, out=options.out, output_bag=options.output_bag, report_path=report_path,
                        plot_path=plot_path, chunks=chunks, requests=extras.get("requests", []),
                        ticks=extras.get("ticks", []))
