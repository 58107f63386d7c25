"""PolicyNode: the lifecycle node that wires cameras, joint state and instruction to the policy and
the policy's action chunks to a trajectory executor. rclpy wiring only: every decision (sync,
scheduling, safety, message layout, diagnostics) lives in the pure modules it calls.

Lifecycle (a ROS 2 managed node; driven by ``--autostart`` or from outside over the standard
lifecycle services, e.g. ``ros2 lifecycle set /lightwam_policy configure``):
- configure: parameters -> PolicyConfig -> bundle loaded and verified -> config checked against the
  bundle -> PolicyPipeline on the backend/device/dtype -> warm-up; subscriptions, the inference
  worker and diagnostics start. Any failure: one error naming the parameter or file, FAILURE, and
  the node stays unconfigured (fix the parameter, configure again).
- activate: the control timer starts and the outputs are enabled. The first command holds the
  measured joint positions until the first chunk arrives.
- deactivate: one hold is sent (the executor stops where it was told to be), control stops.
- cleanup: worker stopped, pipeline closed (device memory released), everything dropped.

Threads: callbacks (images, joint state, instruction, control timer, services, parameters) run on
ONE SingleThreadedExecutor thread, so the scheduler, sync and safety state have a single owner and
need no locks. Model inference runs in plain worker threads (inference_worker.InferencePool:
min(chunk.max_inflight, the backend's max_concurrency) of them, so requests overlap where the
backend gains from it -- CUDA eager / ONNX CUDA -- and run one at a time on the CPU, with CUDA graphs
and torch.compile) and meets the executor only at a locked request/result handoff; each finished
chunk is merged as if it arrived when its worker finished. Why not an executor callback or a
MultiThreadedExecutor: inference takes longer than a control period and a multi-threaded executor
made the 50 Hz timer jitter worse (docs/design.md, "Threading and timing model"). With
control.realtime_priority the executor thread makes itself SCHED_FIFO at its first control tick
(realtime.py), after the workers exist, so
they keep normal scheduling.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.duration import Duration
from rclpy.exceptions import (
    InvalidParameterTypeException,
    InvalidParameterValueException,
    ParameterUninitializedException,
)
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from rclpy.utilities import remove_ros_args
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64MultiArray, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from lightwam_ros import config as cfgmod
from lightwam_ros.config import MAX_JOINT_NAMES, ConfigError, OutputMode, PolicyConfig, instruction_problem
from lightwam_ros.control.diagnostics import Diagnostics, DiagnosticsInput
from lightwam_ros.control.safety import HoldReason, SafetyFilter, hold_reason
from lightwam_ros.control.scheduler import ChunkOutcome, ChunkScheduler
from lightwam_ros.control.sync import FrameSync
from lightwam_ros.inference.pool import InferencePool, PoolResult
from lightwam_ros.ros.images import ImageError, image_to_rgb, time_to_ns
from lightwam_ros.ros.outputs import action_chunk_msg, debug_canvas, diagnostic_array, forward_command, joint_trajectory
from lightwam_ros.types import FrameSet

NODE_NAME = cfgmod.NODE_NAME
THROTTLE_S = 2.0  # min seconds between repeats of one error message (bad frames, unknown joints)
TICK_WINDOW = 500  # control-tick periods kept for the jitter figures in diagnostics (10 s at 50 Hz)
JOINT_HISTORY = 4096  # joint states kept to pair a frame set with the state at its observation time
JOINT_INDEX_CACHE = 16  # distinct JointState name lists whose index maps are kept (a robot sends one or two)
FLOAT32_MAX = float(np.finfo(np.float32).max)  # joint values beyond this become inf in the model input
SHOWN_CHARS = 120  # characters of an instruction quoted in logs and diagnostics
CLEANUP_INFERENCE_WAIT_S = 30.0  # cleanup: a running inference may finish before the model is closed
TEXT_ENCODER_WAIT_S = 10.0  # cleanup: an instruction encode may finish before the text encoder goes
SHUTDOWN_INFERENCE_WAIT_S = 1.0  # shutdown: a running inference may finish, then it is abandoned
SHUTDOWN_ACK_WAIT_S = 0.5  # shutdown: the last hold may be acknowledged before its publisher goes


# ---------------------------------------------------------------------------------------------
# Parameters
# ---------------------------------------------------------------------------------------------

def _descriptor(d: cfgmod.Declaration) -> ParameterDescriptor:
    desc = ParameterDescriptor(name=d.name, type=Parameter.Type[d.type_name].value,
                               description=d.description, additional_constraints=d.constraints)
    if d.float_range is not None:
        desc.floating_point_range = [FloatingPointRange(from_value=d.float_range[0], to_value=d.float_range[1],
                                                        step=0.0)]
    if d.integer_range is not None:
        desc.integer_range = [IntegerRange(from_value=d.integer_range[0], to_value=d.integer_range[1], step=1)]
    return desc


def _scheduler_config(chunk: cfgmod.ChunkConfig, workers: int) -> cfgmod.ChunkConfig:
    """The scheduler paces requests for the inferences that can really run at once: the node's
    worker count (chunk.max_inflight capped by the backend's max_concurrency at configure)."""
    return dataclasses.replace(chunk, max_inflight=workers)


def inference_workers(max_inflight: int, max_concurrency: int) -> int:
    """Worker threads the node runs: chunk.max_inflight, capped by how many predict() calls the
    backend overlaps usefully (1 on the CPU, with CUDA graphs and torch.compile)."""
    return max(1, min(int(max_inflight), int(max_concurrency)))


def _plain(value: Any) -> Any:
    """rclpy parameter value -> plain python (arrays become lists)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return list(value)


# ---------------------------------------------------------------------------------------------
# The node
# ---------------------------------------------------------------------------------------------

@dataclass
class _Runtime:
    """Everything configure builds and cleanup drops (one object, so cleanup cannot miss a part)."""

    config: PolicyConfig
    bundle_info: cfgmod.BundleInfo
    pipeline: Any  # PolicyPipeline (typed loosely: imported at configure time, it pulls in torch)
    text_encoder: Any  # OnlineTextEncoder | None
    sync: FrameSync
    scheduler: ChunkScheduler
    safety: SafetyFilter
    diagnostics: Diagnostics
    worker: InferencePool  # or a stand-in with its interface (offline replay: SimulatedInference)
    workers: int = 1  # inference requests that run at once (the scheduler's max_inflight)
    subscriptions: list = field(default_factory=list)
    publishers: list = field(default_factory=list)
    timers: list = field(default_factory=list)
    services: list = field(default_factory=list)
    output_pub: Any = None
    chunk_pub: Any = None
    canvas_pub: Any = None
    diag_pub: Any = None
    control_timer: Any = None
    # inputs (written by callbacks on the executor thread)
    latest_set: FrameSet | None = None
    state: np.ndarray | None = None  # joints.names order
    measured: np.ndarray | None = None  # output.joint_names order, when the joint state carries them
    state_stamp_ns: int | None = None
    # recent (stamp_ns, state) in stamp order, for the state at a frame set's observation time;
    # pruned to the last joints.max_age + sync.max_age (a set older than sync.max_age is never used)
    state_history: deque = field(default_factory=lambda: deque(maxlen=JOINT_HISTORY))
    joint_index: dict = field(default_factory=dict)  # tuple(msg.name) -> (state idx, measured idx | None)
    instruction: str | None = None  # last received on the topic (None: nothing yet -> instruction.default)
    instruction_status: tuple[str, bool, str] | None = None  # (text, usable, why not), cached per text
    # control state
    active: bool = False
    paused: bool = False
    following: bool = False  # the last tick followed the plan (a hold must be sent on leaving it)
    hold: HoldReason | None = HoldReason.INACTIVE
    last_error: str = ""
    last_canvas_ns: int = 0
    ticks: int = 0
    tick_period_ns: list = field(default_factory=list)  # recent tick-to-tick periods (jitter diag)
    last_tick_wall_ns: int | None = None
    chunks_published: int = 0
    trajectories_published: int = 0
    realtime_done: bool = False  # control.realtime_priority / switch_interval applied (first tick)
    last_tick_now: int | None = None  # node-clock time of the previous control tick


class PolicyNode(LifecycleNode):
    """Lifecycle policy node; see the module docstring for the transitions and threads."""

    def __init__(self, node_name: str = NODE_NAME, *, autostart: bool = False, **kwargs: Any):
        super().__init__(node_name, **kwargs)
        self._rt: _Runtime | None = None
        self._declare_error: ConfigError | None = None  # a bad value in the params file
        self._declare_parameters()
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._autostart_timer = self.create_timer(0.0, self._autostart) if autostart else None

    # -- parameters --------------------------------------------------------------------------------

    def _declare_parameters(self) -> None:
        """Declare the whole table with descriptors. A bad value from the params file fails
        configure with one message naming it, instead of raising out of the constructor with a
        traceback (the parameter falls back to its default meanwhile)."""
        for d in cfgmod.declarations():
            desc = _descriptor(d)
            try:
                self._declare_one(d, desc, ignore_override=False)
            except (InvalidParameterValueException, InvalidParameterTypeException) as exc:
                given = self._parameter_overrides.get(d.name)
                value = given.value if given is not None else "?"
                if isinstance(exc, InvalidParameterTypeException):
                    why = f"has the wrong type, expected {d.type_name.lower().replace('_', ' ')}"
                else:
                    allowed = "; ".join(c for c in d.constraints.split("; ") if not c.startswith("read-only"))
                    why = f"is outside the allowed range {allowed}"
                error = ConfigError(d.name, f"{value!r} from the parameter file {why}")
                self._declare_error = self._declare_error or error
                self._declare_one(d, desc, ignore_override=True)

    def _declare_one(self, d: cfgmod.Declaration, desc: ParameterDescriptor, ignore_override: bool) -> None:
        value = Parameter.Type[d.type_name] if d.default is None else d.default
        self.declare_parameter(d.name, value, desc, ignore_override=ignore_override)

    def _parameter_values(self) -> dict[str, Any]:
        """Flat parameter dict for config.from_params, including unknown names from the params file
        (rclpy ignores undeclared overrides silently; from_params names the typo instead)."""
        values: dict[str, Any] = {}
        for name in cfgmod.SPECS:
            try:
                values[name] = _plain(self.get_parameter(name).value)
            except ParameterUninitializedException:  # declared by type only and never set
                values[name] = None
        for name, p in self._parameter_overrides.items():
            if name not in values and not name.startswith(cfgmod.ROS_BUILTIN_PREFIXES):
                values[name] = _plain(p.value)
        return values

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        rt = self._rt
        if rt is None:  # unconfigured: anything the descriptors accept; configure validates the whole
            if self._declare_error is not None and any(p.name == self._declare_error.parameter for p in params):
                self._declare_error = None  # the bad value from the params file was replaced
            return SetParametersResult(successful=True)
        changes = {p.name: _plain(p.value) for p in params}
        if "use_sim_time" in changes and changes["use_sim_time"] != self.get_parameter("use_sim_time").value:
            return SetParametersResult(successful=False, reason=(
                "parameter 'use_sim_time': read-only while the node is configured (switching clocks under "
                "a running plan makes time jump; clean up, set it, configure again)"))
        result = cfgmod.apply_updates(rt.config, changes, rt.bundle_info)
        if not result.ok:
            return SetParametersResult(successful=False, reason=result.reason)
        if result.config.dry_run and not rt.config.dry_run and rt.following:
            self._publish_hold(rt, HoldReason.DRY_RUN, self._now_ns())  # the last command before going silent
            rt.following = False
        self._apply_config(rt, result.config)
        self.get_logger().info(f"parameters updated: {sorted(changes)}")
        return SetParametersResult(successful=True)

    def _apply_config(self, rt: _Runtime, new: PolicyConfig) -> None:
        rt.config = new
        rt.sync.reconfigure(new.sync)
        rt.scheduler.reconfigure(_scheduler_config(new.chunk, min(new.chunk.max_inflight, rt.workers)))
        rt.safety.reconfigure(new.safety)

    # -- lifecycle ---------------------------------------------------------------------------------

    def _autostart(self) -> None:
        self.destroy_timer(self._autostart_timer)
        self._autostart_timer = None
        if self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
            self.trigger_activate()
        else:
            self.get_logger().error("autostart: configure failed; fix the parameter named above and "
                                    "configure again (ros2 lifecycle set <node> configure)")

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        t0 = time.monotonic()
        try:
            self._rt = self._build_runtime()
        except ConfigError as exc:
            self.get_logger().error(f"configure failed: {exc}")
            return TransitionCallbackReturn.FAILURE
        except Exception as exc:  # noqa: BLE001 - bundle, backend, device errors name their file/parameter
            self.get_logger().error(f"configure failed: {type(exc).__name__}: {exc}")
            return TransitionCallbackReturn.FAILURE
        rt = self._rt
        p = rt.pipeline
        self.get_logger().info(
            f"configured in {time.monotonic() - t0:.1f} s: bundle {p.bundle.path} on {p.backend.name}/"
            f"{p.device}/{str(p.backend.dtype).removeprefix('torch.')}, {len(rt.config.cameras.names)} cameras, "
            f"output {rt.config.output.mode.value} -> {self._output_topic_name()}"
            f"{' (dry run)' if rt.config.dry_run else ''}")
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        rt = self._rt
        ret = super().on_activate(state)  # enables the lifecycle publishers
        for result in rt.worker.poll():  # results computed before activation are stale
            rt.scheduler.inference_failed(result.ticket)
        rt.scheduler.reset()  # requests still running become void: their chunks are never merged
        rt.safety.reset()  # the robot may have moved while inactive: start from the measured position
        rt.active, rt.paused, rt.following = True, False, False
        rt.last_tick_now = None
        rt.control_timer = self.create_timer(1.0 / rt.config.control_rate_hz, self._on_control_tick)
        self.get_logger().info(f"active: control at {rt.config.control_rate_hz:g} Hz")
        return ret

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        rt = self._rt
        self._stop_control(rt, HoldReason.INACTIVE)
        self.get_logger().info("inactive: holding, no commands")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        self.get_logger().info("cleaned up: model released")
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """To finalized (over the lifecycle service, or from main() on SIGINT/SIGTERM): a node that
        was following sends its last hold first (and gives it SHUTDOWN_ACK_WAIT_S to reach reliable
        subscribers before the publisher goes), then everything is released without waiting more
        than SHUTDOWN_INFERENCE_WAIT_S for a running inference: it holds no robot command, and the
        process is about to end."""
        rt = self._rt
        try:
            if rt is not None and rt.active:
                held = rt.following and rt.output_pub is not None
                self._stop_control(rt, HoldReason.INACTIVE)
                if held:
                    rt.output_pub.wait_for_all_acked(Duration(nanoseconds=int(SHUTDOWN_ACK_WAIT_S * 1e9)))
        finally:  # released here even if the hold failed (on_error would wait for the inference)
            self._release(SHUTDOWN_INFERENCE_WAIT_S)
        return super().on_shutdown(state)

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.get_logger().error("lifecycle error: releasing everything (back to unconfigured)")
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def destroy_node(self) -> None:
        self._release()
        super().destroy_node()

    def lifecycle_state(self) -> str:
        """The lifecycle state's label: a primary state (unconfigured, inactive, active, finalized)
        or, while a transition callback runs, its transition state (configuring, shuttingdown, ...)."""
        return self._state_machine.current_state[1]

    def _stop_control(self, rt: _Runtime, reason: HoldReason) -> None:
        if rt.following:
            self._publish_hold(rt, reason, self._now_ns())
        rt.active, rt.following, rt.hold = False, False, reason
        if rt.control_timer is not None:
            self.destroy_timer(rt.control_timer)
            rt.control_timer = None

    # -- configure: build everything ---------------------------------------------------------------

    def _build_runtime(self) -> _Runtime:
        from lightwam_ros.bundle.format import Bundle  # torch-heavy imports only when configuring
        from lightwam_ros.inference.pipeline import PolicyPipeline

        if self._declare_error is not None:
            raise self._declare_error
        cfg = cfgmod.from_params(self._parameter_values())
        path = cfgmod.resolve_bundle_path(cfg.bundle)
        bundle = Bundle.load(path, verify=True)  # sha256 of every file, shapes, dims
        emb = bundle.embodiment
        info = cfgmod.BundleInfo(tuple(emb.cameras), tuple(emb.state_names), tuple(emb.action_names),
                                 int(emb.trained_steps), emb.action_rate_hz)
        for warning in cfgmod.validate_against_bundle(cfg, info):
            self.get_logger().warning(warning)
        steps = min(info.trained_steps, bundle.model_config.horizon)  # never compute unexecutable rows
        pipeline = PolicyPipeline.from_bundle(bundle, backend=cfg.backend.value, device=cfg.device,
                                              dtype=cfg.dtype.value, steps=steps,
                                              text_cache_dir=cfg.text.cache_dir or None)
        try:
            text_encoder = self._text_encoder(cfg, pipeline)
            warm_ms = pipeline.warmup(runs=1)
            self.get_logger().info(f"warm-up: {warm_ms:.1f} ms per inference")
            from lightwam_ros.control.latency_advice import (
                startup_advice,  # does this latency fit a chunk? say so plainly
            )
            advice = startup_advice(warm_ms, cfg.chunk.steps_limit(info.trained_steps), pipeline.dt_ns,
                                    inference_workers(cfg.chunk.max_inflight, pipeline.max_concurrency),
                                    pipeline.backend.name, str(pipeline.device), info.trained_steps)
            if advice is not None:
                (self.get_logger().warning if advice.too_slow else self.get_logger().info)(advice.message)
            workers = inference_workers(cfg.chunk.max_inflight, pipeline.max_concurrency)
            if cfg.chunk.max_inflight > workers:
                self.get_logger().warning(
                    f"chunk.max_inflight {cfg.chunk.max_inflight}: backend {pipeline.backend.name} "
                    f"on {pipeline.device} overlaps at most {pipeline.max_concurrency} inference(s) usefully; "
                    f"running {workers} inference worker(s), so at most {workers} request(s) in flight")
            rt = self._wire(cfg, info, pipeline, text_encoder, workers)
            if warm_ms == warm_ms and warm_ms > 0:  # not NaN: pace the first requests from the warm-up
                rt.scheduler.prime(int(warm_ms * 1e6), cfg.chunk.steps_limit(info.trained_steps), pipeline.dt_ns)
            return rt
        except BaseException:
            pipeline.close()
            raise

    @staticmethod
    def _text_encoder(cfg: PolicyConfig, pipeline: Any) -> Any:
        if cfg.text.encoder is not cfgmod.TextEncoder.UMT5:
            return None
        from lightwam_ros.text import OnlineEncoderConfig, OnlineTextEncoder

        return OnlineTextEncoder(pipeline.contexts, OnlineEncoderConfig(
            wan_dir=cfg.text.wan_dir, device=cfg.text.device, cache_dir=cfg.text.cache_dir))

    def _wire(self, cfg: PolicyConfig, info: cfgmod.BundleInfo, pipeline: Any, text_encoder: Any,
              workers: int = 1) -> _Runtime:
        now = self._now_ns()
        worker = InferencePool(lambda fs: pipeline.predict(fs.images, fs.state, fs.instruction, fs.stamp_ns), workers)
        rt = _Runtime(config=cfg, bundle_info=info, pipeline=pipeline, text_encoder=text_encoder,
                      sync=FrameSync(cfg.cameras.names, cfg.sync, now),
                      scheduler=ChunkScheduler(_scheduler_config(cfg.chunk, workers)),
                      safety=SafetyFilter(cfg.safety, cfg.output.joint_names),
                      diagnostics=Diagnostics(self.get_fully_qualified_name(), cfg.cameras.names, now),
                      worker=worker, workers=workers)
        try:
            camera_qos = QoSProfile(reliability=ReliabilityPolicy.BEST_EFFORT, history=HistoryPolicy.KEEP_LAST,
                                    depth=cfg.sync.queue_size, durability=DurabilityPolicy.VOLATILE)
            for camera, topic in zip(cfg.cameras.names, cfg.cameras.topics):
                rt.subscriptions.append(self.create_subscription(
                    Image, topic, lambda msg, c=camera, t=topic: self._on_image(msg, c, t), camera_qos))
            rt.subscriptions.append(self.create_subscription(
                JointState, cfg.joints.state_topic, self._on_joint_state,
                QoSProfile(reliability=ReliabilityPolicy.BEST_EFFORT, history=HistoryPolicy.KEEP_LAST, depth=5)))
            latched = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, depth=1,
                                 durability=DurabilityPolicy.TRANSIENT_LOCAL)
            rt.subscriptions.append(self.create_subscription(
                String, cfg.instruction.topic, self._on_instruction, latched))
            if cfg.output.mode is OutputMode.JOINT_TRAJECTORY:
                rt.output_pub = self.create_lifecycle_publisher(JointTrajectory, cfg.output.topic, 10)
            elif cfg.output.mode is OutputMode.FORWARD:
                rt.output_pub = self.create_lifecycle_publisher(Float64MultiArray, cfg.output.topic, 10)
            rt.chunk_pub = self.create_lifecycle_publisher(JointTrajectory, "~/action_chunk", 10)
            rt.canvas_pub = self.create_lifecycle_publisher(Image, "~/debug/canvas", 1)
            rt.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
            rt.publishers += [p for p in (rt.output_pub, rt.chunk_pub, rt.canvas_pub, rt.diag_pub) if p is not None]
            rt.timers.append(self.create_timer(1.0 / cfg.diagnostics_rate_hz, self._on_diagnostics))
            rt.services += [self.create_service(Trigger, "~/pause", self._on_pause),
                            self.create_service(Trigger, "~/resume", self._on_resume)]
        except BaseException:
            self._destroy_entities(rt)
            worker.close()
            raise
        return rt

    def _destroy_entities(self, rt: _Runtime) -> None:
        for s in rt.subscriptions:
            self.destroy_subscription(s)
        for p in rt.publishers:
            if p in self._managed_entities:
                self.destroy_lifecycle_publisher(p)
            else:
                self.destroy_publisher(p)
        for t in [*rt.timers, rt.control_timer]:
            if t is not None:
                self.destroy_timer(t)
        for s in rt.services:
            self.destroy_service(s)
        rt.subscriptions, rt.publishers, rt.timers, rt.services, rt.control_timer = [], [], [], [], None

    def _release(self, inference_wait_s: float = CLEANUP_INFERENCE_WAIT_S) -> None:
        """Stop the worker, destroy every entity, close the pipeline (frees device memory).

        A running inference gets ``inference_wait_s`` to finish (cleanup: the model must be closed
        before a new configure loads another; shutdown: short, see on_shutdown). One still running
        then is abandoned in its daemon thread, and the model stays open under it -- closing it
        could crash the call; it goes with its last reference or with the process."""
        rt, self._rt = self._rt, None
        if rt is None:
            return
        rt.active = False
        self._destroy_entities(rt)
        if not rt.worker.close(inference_wait_s) and getattr(rt.worker, "running", 0):
            self.get_logger().warning(
                f"an inference still running after {inference_wait_s:g} s was abandoned (its result is "
                "dropped); the model stays loaded until it ends")
            return
        if rt.text_encoder is not None:
            rt.text_encoder.close(min(TEXT_ENCODER_WAIT_S, inference_wait_s))
        rt.pipeline.close()

    # -- inputs --------------------------------------------------------------------------------

    def _now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def _mono_ns(self) -> int:
        """The clock the inference pool stamps finish times with (offline replay: the bag clock)."""
        return time.monotonic_ns()

    def _on_image(self, msg: Image, camera: str, topic: str) -> None:
        rt = self._rt
        if rt is None:
            return
        now = self._now_ns()
        try:
            rgb = image_to_rgb(msg, self.resolve_topic_name(topic))
        except ImageError as exc:
            self.get_logger().error(f"{exc}; frame dropped", throttle_duration_sec=THROTTLE_S)
            return
        frames = rt.sync.add(camera, time_to_ns(msg.header.stamp), rgb, now)
        if frames is not None:
            rt.latest_set = frames
            self._maybe_request_inference(rt, now)

    def _on_joint_state(self, msg: JointState) -> None:
        """Checks everything a bad message can carry before any per-name work, so no message can
        cost the executor (which also runs the control tick) more than a bounded amount. A state
        whose values cannot be trusted (NaN/Inf, beyond float32) makes the robot hold at once;
        other bad messages are dropped (the previous state ages out as if it had been lost)."""
        rt = self._rt
        if rt is None:
            return
        topic = rt.config.joints.state_topic
        if len(msg.name) > MAX_JOINT_NAMES or len(msg.position) != len(msg.name):
            self.get_logger().error(
                f"joint state on '{self.resolve_topic_name(topic)}' has {len(msg.name)} names and "
                f"{len(msg.position)} positions (at most {MAX_JOINT_NAMES}, one position per name); dropped",
                throttle_duration_sec=THROTTLE_S)
            return
        names = tuple(msg.name)
        index = rt.joint_index.get(names)
        if index is None:
            index = self._joint_index(rt, names)
            if index is None:
                return
        position = np.asarray(msg.position, dtype=np.float64)
        state = position[index[0]]
        measured = position[index[1]] if index[1] is not None else None
        used = state if measured is None else np.concatenate([state, measured])
        if not (np.abs(used) <= FLOAT32_MAX).all():  # False for NaN too
            bad = sorted({n for n, v in zip((*rt.config.joints.names, *rt.config.output.joint_names), used)
                          if not abs(v) <= FLOAT32_MAX})
            self.get_logger().error(f"joint state has NaN/Inf or out-of-range values for {bad}; holding",
                                    throttle_duration_sec=THROTTLE_S)
            rt.state = rt.measured = rt.state_stamp_ns = None  # stale at once: hold until a good one
            return
        now = self._now_ns()
        stamp = time_to_ns(msg.header.stamp)
        stamp = stamp if stamp > 0 else now  # unstamped: arrival time
        if stamp - now > rt.config.joints.future_tolerance_ns:
            self.get_logger().error(
                f"joint state on '{self.resolve_topic_name(topic)}' is stamped {(stamp - now) / 1e9:.3f} s "
                f"in the future (joints.future_tolerance {rt.config.joints.future_tolerance_ns / 1e9:g} s): "
                "are the clocks of the robot and this host synchronized? dropped", throttle_duration_sec=THROTTLE_S)
            return
        rt.state = state
        rt.measured = measured
        rt.state_stamp_ns = stamp
        self._remember_state(rt, stamp, state)

    def _joint_index(self, rt: _Runtime, names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray | None] | None:
        """Index maps of a new name list (cached, at most JOINT_INDEX_CACHE lists); None (message
        dropped, error logged) if a joint of joints.names is missing or a used name is duplicated."""
        cfg = rt.config
        where: dict[str, int] = {}
        duplicated: set[str] = set()
        for i, n in enumerate(names):
            if n in where:
                duplicated.add(n)
            where[n] = i
        topic = self.resolve_topic_name(cfg.joints.state_topic)
        used_dups = sorted(duplicated & {*cfg.joints.names, *cfg.output.joint_names})
        if used_dups:
            self.get_logger().error(f"joint state on '{topic}' names {used_dups} more than once; dropped",
                                    throttle_duration_sec=THROTTLE_S)
            return None
        missing = [n for n in cfg.joints.names if n not in where]
        if missing:
            shown = list(names[:20]) + (["..."] if len(names) > 20 else [])
            self.get_logger().error(f"joint state on '{topic}' lacks joints {missing} of joints.names (it has "
                                    f"{shown}); holding", throttle_duration_sec=THROTTLE_S)
            return None
        state_idx = np.array([where[n] for n in cfg.joints.names])
        out = cfg.output.joint_names
        measured_idx = np.array([where[n] for n in out]) if all(n in where for n in out) else None
        if len(rt.joint_index) >= JOINT_INDEX_CACHE:
            rt.joint_index.clear()
        rt.joint_index[names] = (state_idx, measured_idx)
        return rt.joint_index[names]

    @staticmethod
    def _remember_state(rt: _Runtime, stamp: int, state: np.ndarray) -> None:
        history = rt.state_history
        if history and stamp <= history[-1][0]:
            if stamp == history[-1][0]:  # duplicate stamp: the newer message wins
                history.pop()
            else:  # time ran backwards (sim clock reset, bag loop): the old history means nothing
                history.clear()
        history.append((stamp, state))
        horizon = stamp - rt.config.joints.max_age_ns - rt.config.sync.max_age_ns
        while len(history) > 1 and history[1][0] <= horizon:  # keep one at or before the horizon
            history.popleft()

    @staticmethod
    def _state_at(rt: _Runtime, stamp_ns: int) -> np.ndarray | None:
        """The joint state paired with an observation at ``stamp_ns``: the latest with stamp <=
        stamp_ns (training pairs each frame with the state recorded with it, not a later one); if
        every kept state is newer, the oldest kept one (nearest in time). None if the one chosen is
        more than joints.max_age away from the observation (a stale pairing holds, as a stale
        joint state does)."""
        history = rt.state_history
        if not history:
            return None
        chosen = history[0]
        for entry in reversed(history):
            if entry[0] <= stamp_ns:
                chosen = entry
                break
        if abs(stamp_ns - chosen[0]) > rt.config.joints.max_age_ns:
            return None
        return chosen[1]

    def _on_instruction(self, msg: String) -> None:
        rt = self._rt
        if rt is None:
            return
        rt.instruction = msg.data
        ok, why = self._instruction_status(rt)
        if ok:
            self.get_logger().info(f"instruction: {_shown(msg.data)}")
        elif why:
            self.get_logger().error(why)
        elif not msg.data:
            self.get_logger().info("empty instruction: holding until the next one")

    @staticmethod
    def _current_instruction(rt: _Runtime) -> str:
        """The instruction on the topic; instruction.default only until the first one arrives. An
        empty instruction on the topic means "stop": it does not bring the default back."""
        return rt.instruction if rt.instruction is not None else rt.config.instruction.default

    def _instruction_status(self, rt: _Runtime) -> tuple[bool, str]:
        """(usable, why not). Unknown instructions hold the robot; the error lists the known ones.
        Runs every control tick, so a final answer is cached per text (the lookup hashes the
        cleaned text); only an instruction still being encoded online is asked again."""
        ins = self._current_instruction(rt)
        cached = rt.instruction_status
        if cached is not None and cached[0] is ins:
            return cached[1], cached[2]
        ok, why, final = self._instruction_lookup(rt, ins)
        rt.instruction_status = (ins, ok, why) if final else None
        return ok, why

    def _instruction_lookup(self, rt: _Runtime, ins: str) -> tuple[bool, str, bool]:
        from lightwam_ros.text import TextStatus, UnknownInstructionError

        if not ins:
            return False, "", True
        problem = instruction_problem(ins)
        if problem:
            topic = self.resolve_topic_name(rt.config.instruction.topic)
            return False, f"instruction on '{topic}' {problem}; holding", True
        if ins in rt.pipeline.contexts:
            return True, "", True
        if rt.text_encoder is not None:
            status = rt.text_encoder.request(ins)
            if status is TextStatus.READY:
                return True, "", True
            if status is TextStatus.FAILED:
                return False, f"instruction {_shown(ins)}: encoding failed: {rt.text_encoder.error(ins)}; holding", True
            return False, "", False  # ENCODING: hold quietly, diagnostics report it; ask again next tick
        return False, str(UnknownInstructionError(_shown(ins), rt.pipeline.known_instructions,
                                                  f"bundle {rt.pipeline.bundle.path}")) + "\nHolding.", True

    @staticmethod
    def _state_fresh(rt: _Runtime, now: int) -> bool:
        return rt.state is not None and rt.config.joints.age_ok(now - rt.state_stamp_ns)

    # -- inference requests ------------------------------------------------------------------------

    def _maybe_request_inference(self, rt: _Runtime, now: int) -> None:
        """Hand the newest fresh frame set to a free worker when the scheduler needs the next chunk."""
        if not rt.active or rt.paused or rt.latest_set is None or rt.worker.busy:
            return
        frames = rt.latest_set
        if not rt.scheduler.wants_inference(now, obs_stamp_ns=frames.stamp_ns):
            return
        if now - frames.stamp_ns > rt.config.sync.max_age_ns or not self._state_fresh(rt, now):
            return
        ok, _ = self._instruction_status(rt)
        if not ok:
            return
        state = self._state_at(rt, frames.stamp_ns)
        if state is None:
            return
        request = dataclasses.replace(frames, state=state.copy(), instruction=self._current_instruction(rt))
        ticket = rt.scheduler.inference_started(now, obs_stamp_ns=frames.stamp_ns)
        if rt.worker.submit(ticket, request):
            rt.latest_set = None  # one set is used once
        else:  # no free slot after all: the ticket must not stay in flight
            rt.scheduler.inference_failed(ticket)

    def _collect_result(self, rt: _Runtime, now: int) -> bool:
        """Merge every finished chunk into the plan, in finish order, each at the node-clock time its
        worker finished (the pool's monotonic finish time mapped onto the node clock, clamped to the
        interval since the previous tick): a chunk that finished mid-period is planned from when it
        was ready, not from when the tick collected it. True when the plan changed (re-send trajectory)."""
        results = rt.worker.poll()
        if not results:
            return False
        mono = self._mono_ns()
        lo = rt.last_tick_now if rt.last_tick_now is not None else now
        changed = False
        for result in results:
            arrival = min(now, max(lo, now - (mono - result.finished_monotonic_ns)))
            changed = self._merge_result(rt, result, arrival) or changed
        return changed

    def _merge_result(self, rt: _Runtime, result: PoolResult, now: int) -> bool:
        """Merge one finished request at node-clock time ``now``; True when the plan changed."""
        ticket = result.ticket
        if result.chunk is None:
            rt.scheduler.inference_failed(ticket)
            rt.last_error = result.error or "inference failed"
            self.get_logger().error(f"inference failed: {rt.last_error}; holding", throttle_duration_sec=THROTTLE_S)
            return False
        chunk = result.chunk
        rt.chunk_pub.publish(action_chunk_msg(chunk, rt.config.output.joint_names))
        rt.chunks_published += 1
        self._publish_canvas(rt, chunk.stamp_ns, now)
        outcome = rt.scheduler.on_chunk(chunk, now, ticket, check=rt.safety.check_chunk)
        rt.diagnostics.record_chunk(outcome, chunk.timings_ms)
        if outcome is ChunkOutcome.VOID:  # requested before a resume/activation: never used
            return False
        if outcome is ChunkOutcome.REFUSED:
            rt.last_error = rt.scheduler.last_refusal or "chunk refused"
            self.get_logger().error(f"chunk refused: {rt.last_error}; holding", throttle_duration_sec=THROTTLE_S)
            return False
        if outcome is not ChunkOutcome.ACCEPTED:
            self.get_logger().warning(f"chunk {outcome.value} (observation {(now - chunk.stamp_ns) / 1e6:.0f} ms old)",
                                      throttle_duration_sec=THROTTLE_S)
        return outcome is ChunkOutcome.ACCEPTED

    # -- control -----------------------------------------------------------------------------------

    def _on_control_tick(self) -> None:
        rt = self._rt
        if rt is None or not rt.active:
            return
        wall = time.monotonic_ns()
        if rt.last_tick_wall_ns is not None:
            rt.tick_period_ns.append(wall - rt.last_tick_wall_ns)
            del rt.tick_period_ns[:-TICK_WINDOW]
        rt.last_tick_wall_ns = wall
        rt.ticks += 1
        if not rt.realtime_done:
            self._apply_realtime(rt)
        now = self._now_ns()
        if rt.last_tick_now is not None and now < rt.last_tick_now:
            self._on_clock_jump(rt, now)
        new_plan = self._collect_result(rt, now)
        tick = rt.scheduler.tick(now)
        ok_instruction, why = self._instruction_status(rt)
        if why:
            self.get_logger().error(why, throttle_duration_sec=10.0)
        reason = hold_reason(active=rt.active, paused=rt.paused, state_fresh=self._state_fresh(rt, now),
                             dead_cameras=rt.sync.dead_cameras(now), have_instruction=ok_instruction,
                             tick_status=tick.status, dry_run=rt.config.dry_run)
        rt.hold = reason
        if rt.config.dry_run:  # never commands, whatever else holds (the switch sent the last hold)
            rt.safety.silent(reason or HoldReason.DRY_RUN)
            followed = False
        elif reason is None:
            followed = self._follow(rt, tick.action, now, resend=new_plan or not rt.following)
        else:
            self._hold(rt, reason, now)
            followed = False
        rt.following = followed
        self._maybe_request_inference(rt, now)
        rt.last_tick_now = now

    def _on_clock_jump(self, rt: _Runtime, now: int) -> None:
        """The node clock ran backwards (a looping bag, a /clock restart): every stamp held so far
        belongs to another timeline. The plan, requests in flight, the joint state and its history
        and the camera queues are dropped; the robot holds until fresh input forms a new plan."""
        self.get_logger().warning(
            f"clock jumped back by {(rt.last_tick_now - now) / 1e9:.3f} s: plan, joint state and camera "
            "queues reset; holding until fresh input")
        rt.scheduler.reset()
        rt.sync.reset(now)
        rt.latest_set = None
        rt.state = rt.measured = rt.state_stamp_ns = None
        rt.state_history.clear()
        rt.last_tick_now = None

    def _apply_realtime(self, rt: _Runtime) -> None:
        """control.realtime_priority / switch_interval, once per configured runtime, from the control
        tick: it runs on the executor thread, the one to promote (realtime.py), and after the pool's
        threads exist, so they do not inherit SCHED_FIFO."""
        rt.realtime_done = True
        rc = rt.config.realtime
        if not (rc.priority or rc.switch_interval_s):
            return
        from lightwam_ros.ros.realtime import apply_realtime

        msg = apply_realtime(rc.priority, rc.switch_interval_s or None)
        (self.get_logger().warning if msg.startswith("warning:") else self.get_logger().info)(msg)

    @staticmethod
    def _measured(rt: _Runtime, fallback: np.ndarray | None) -> np.ndarray | None:
        """Measured positions in action order; when the action dims are not joints of the joint
        state, or are deltas (a measured position is no reference for an increment), the plan's
        own current value is the reference."""
        if rt.measured is not None and rt.config.output.holds_by_repeating:
            return rt.measured
        return fallback

    def _follow(self, rt: _Runtime, action: np.ndarray, now: int, resend: bool) -> bool:
        """Command the plan's action for this tick; False if no command could be formed (no
        reference position: nothing is published, the tick counts as silent)."""
        measured = self._measured(rt, action)
        mode = rt.config.output.mode
        if mode is OutputMode.JOINT_TRAJECTORY and rt.safety.last_commanded is None:
            # A trajectory starts from where the controller is now and reaches its first point one
            # step later, so after a silence the reference is the measured position itself (a
            # step taken now would let the first point be two steps away).
            command = rt.safety.anchor(measured)
        else:
            command = rt.safety.step(action, measured)
        if command is None:
            rt.safety.silent(HoldReason.STALE_STATE)
            return False
        if mode is OutputMode.FORWARD:
            rt.output_pub.publish(forward_command(command))
        elif mode is OutputMode.JOINT_TRAJECTORY and resend:
            points = rt.scheduler.upcoming(now, rt.config.output.trajectory_steps)
            if len(points) == 0:
                points = command[None]
            dt = rt.scheduler.dt_ns or rt.config.control_period_ns
            limited = rt.safety.limit_trajectory(points, dt, rt.config.control_period_ns, measured)
            if limited is not None:
                rt.output_pub.publish(joint_trajectory(rt.config.output.joint_names, limited, dt,
                                                       rt.config.output.send_velocities))
                rt.trajectories_published += 1
        return True

    def _hold(self, rt: _Runtime, reason: HoldReason, now: int) -> None:
        """One hold tick. Position actions: forward mode repeats the last command every tick (the
        controller must be told where to stay); a trajectory controller gets one hold message when
        the node stops following and then silence (it keeps the hold). Delta actions: never the
        last delta again (that keeps the robot moving) -- output.hold_command if configured, else
        nothing."""
        out = rt.config.output
        if out.mode is OutputMode.FORWARD and not out.holds_by_repeating:
            if out.hold_command and rt.output_pub is not None:
                rt.output_pub.publish(forward_command(rt.safety.hold_with(reason, out.hold_command)))
            else:
                rt.safety.silent(reason)
        elif out.mode is OutputMode.FORWARD or (out.mode is OutputMode.JOINT_TRAJECTORY and rt.following):
            self._publish_hold(rt, reason, now)
        else:
            rt.safety.silent(reason)

    def _publish_hold(self, rt: _Runtime, reason: HoldReason, now: int) -> None:
        """Publish the position to hold (position actions) -- or, for delta actions, the neutral
        hold command or nothing (see _hold)."""
        out = rt.config.output
        if not out.holds_by_repeating:
            if out.hold_command and rt.output_pub is not None and out.mode is OutputMode.FORWARD:
                rt.output_pub.publish(forward_command(rt.safety.hold_with(reason, out.hold_command)))
            else:
                rt.safety.silent(reason)
            return
        position = rt.safety.hold(reason, self._measured(rt, None))
        if position is None or rt.output_pub is None:
            return
        if rt.config.output.mode is OutputMode.FORWARD:
            rt.output_pub.publish(forward_command(position))
        else:
            rt.output_pub.publish(joint_trajectory(rt.config.output.joint_names, position[None],
                                                   rt.config.control_period_ns))
            rt.trajectories_published += 1

    def _publish_canvas(self, rt: _Runtime, stamp_ns: int, now: int) -> None:
        rate = rt.config.canvas_rate_hz
        if rate <= 0 or now - rt.last_canvas_ns < 1e9 / rate or rt.canvas_pub.get_subscription_count() == 0:
            return
        canvas = rt.pipeline.canvas_for(stamp_ns)  # with overlapping requests: this chunk's own input
        if canvas is None:
            canvas = rt.pipeline.last_canvas
        if canvas is not None:
            rt.canvas_pub.publish(debug_canvas(canvas, stamp_ns, "lightwam_canvas"))
            rt.last_canvas_ns = now

    # -- services ----------------------------------------------------------------------------------

    def _on_pause(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        rt = self._rt
        if rt is None or not rt.active:
            response.success, response.message = False, "not active"
            return response
        rt.paused = True
        response.success, response.message = True, "paused: holding the last command"
        self.get_logger().info("paused")
        return response

    def _on_resume(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        rt = self._rt
        if rt is None or not rt.active:
            response.success, response.message = False, "not active"
            return response
        if rt.paused:
            rt.paused = False
            rt.scheduler.reset()  # the plan from before the pause is stale: wait for a fresh chunk
        response.success, response.message = True, "resumed: following the policy from a fresh chunk"
        self.get_logger().info("resumed")
        return response

    # -- diagnostics -------------------------------------------------------------------------------

    def _on_diagnostics(self) -> None:
        rt = self._rt
        if rt is None:
            return
        now = self._now_ns()
        sched = rt.scheduler
        latency = sched.expected_latency_ns
        keeps_up = None
        if latency is not None and sched.dt_ns:
            steps = rt.config.chunk.steps_limit(rt.bundle_info.trained_steps)
            keeps_up = ChunkScheduler.keeps_up(latency, steps, sched.dt_ns,
                                               max_inflight=sched.config.max_inflight)
        extra: dict[str, Any] = {"lifecycle": "active" if rt.active else "inactive", "paused": rt.paused,
                                 "dry_run": rt.config.dry_run, "ticks": rt.ticks,
                                 "trajectories_published": rt.trajectories_published,
                                 "chunks_published": rt.chunks_published}
        if len(rt.tick_period_ns) > 1:  # wall-clock periods of the last TICK_WINDOW control ticks
            periods = np.asarray(rt.tick_period_ns, dtype=np.float64) / 1e6
            extra.update({"tick_period_ms.mean": float(periods.mean()), "tick_period_ms.std": float(periods.std()),
                          "tick_period_ms.p99": float(np.percentile(periods, 99)),
                          "tick_period_ms.max": float(periods.max())})
        if rt.last_error:
            extra["last_error"] = rt.last_error
        if rt.text_encoder is not None:
            extra.update(rt.text_encoder.diagnostics())
        p = rt.pipeline
        inp = DiagnosticsInput(
            sync=rt.sync.stats(), dead_cameras=rt.sync.dead_cameras(now), silence_ns=rt.sync.silence_ns(now),
            hold=rt.hold if rt.active else HoldReason.INACTIVE, queue_steps=sched.remaining_steps(now),
            safety=rt.safety.stats(), backend=p.backend.name, device=str(p.device),
            dtype=str(p.backend.dtype).removeprefix("torch."), expected_latency_ns=latency, keeps_up=keeps_up,
            state_age_ns=None if rt.state_stamp_ns is None else now - rt.state_stamp_ns,
            instruction=_clipped(self._current_instruction(rt)) or None, extra=extra,
            chunk_steps=rt.config.chunk.steps_limit(rt.bundle_info.trained_steps), dt_ns=sched.dt_ns or p.dt_ns,
            max_inflight=sched.config.max_inflight)
        rt.diag_pub.publish(diagnostic_array(rt.diagnostics.statuses(now, inp), now))

    # -- introspection (tests, demo) ---------------------------------------------------------------

    @property
    def runtime(self) -> _Runtime | None:
        """The configured runtime (None when unconfigured). Read-only use from the executor thread."""
        return self._rt

    def _output_topic_name(self) -> str:
        rt = self._rt
        if rt is None or rt.config.output.mode is OutputMode.NONE:
            return "(none)"
        return self.resolve_topic_name(rt.config.output.topic)


def _clipped(text: str) -> str:
    """An instruction as reported in diagnostics: at most SHOWN_CHARS characters."""
    return text if len(text) <= SHOWN_CHARS else f"{text[:SHOWN_CHARS]}... ({len(text)} characters)"


def _shown(text: str) -> str:
    """An instruction as quoted in logs and diagnostics: at most SHOWN_CHARS characters."""
    return repr(text) if len(text) <= SHOWN_CHARS else f"{text[:SHOWN_CHARS]!r}... ({len(text)} characters)"


# ---------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------

class RosLogHandler(logging.Handler):
    """Forwards the library's Python logging (pipeline, backends, text) to the node's ROS logger, so
    warnings such as "dtype bfloat16 requested on the CPU" reach the console and /rosout like the
    node's own messages."""

    def __init__(self, ros_logger: Any):
        super().__init__()
        self._ros = ros_logger

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = f"[{record.name}] {record.getMessage()}"
            if record.levelno >= logging.ERROR:
                self._ros.error(msg)
            elif record.levelno >= logging.WARNING:
                self._ros.warning(msg)
            elif record.levelno >= logging.INFO:
                self._ros.info(msg)
            else:
                self._ros.debug(msg)
        except Exception:  # noqa: BLE001 - logging must never raise into the caller
            self.handleError(record)


def forward_python_logging(node: Node) -> None:
    library = logging.getLogger("lightwam_ros")
    library.addHandler(RosLogHandler(node.get_logger()))
    library.setLevel(logging.INFO)
    library.propagate = False


def parse_arguments(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="policy_node", description="Light-WAM lifecycle policy node")
    parser.add_argument("--autostart", action="store_true",
                        help="configure and activate at start (default: wait for lifecycle transitions)")
    return parser.parse_args(list(argv))


class StopSignals:
    """SIGINT / SIGTERM for main(): the first one asks the executor loop to stop; the node then leaves
    through its shutdown transition with the ROS context still up, so the last hold is published.

    Why not rclpy's own handlers: they shut the context down from the signal, under the running
    executor -- no hold can be published any more, the executor may then fail to build its next
    wait set (RCLError traceback and exit code 1: launch's SIGTERM did that), and a KeyboardInterrupt
    lands wherever the executor thread happens to be.

    How the loop notices: Python's C-level handler writes the signal number to a wakeup pipe at
    once; a small daemon thread reads it, records the signal and triggers a guard condition of the
    node, which ends the executor's wait. No polling, nothing added to the control path.

    The Python-level handler runs on the main (executor) thread between two bytecodes. It raises
    KeyboardInterrupt only where waiting for the current callback would be slow and pointless:
    during configure (bundle load, warm-up: up to a minute on a loaded CPU) and cleanup / error
    processing (waiting for a running inference) -- nothing is commanded then -- and on a second
    signal (stop now: the launch escalating, or Ctrl-C pressed twice).
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)
    INTERRUPTIBLE = ("configuring", "cleaningup", "errorprocessing")  # transition states

    def __init__(self) -> None:
        self.received: int | None = None  # the first signal (None: none yet)
        self._count = 0
        self._interrupt_now = lambda: False
        self._wake = lambda: None
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._write_fd, False)
        self._previous_handlers = {s: signal.signal(s, self._on_signal) for s in self.SIGNALS}
        self._previous_fd = signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)
        threading.Thread(target=self._watch, name="lightwam-signals", daemon=True).start()

    def attach(self, node: PolicyNode) -> None:
        """Wake ``node``'s executor on a signal, and cut its configure short."""
        guard = node.create_guard_condition(lambda: None)  # its callback does nothing: the wake-up is the point
        self._wake = guard.trigger
        self._interrupt_now = lambda: node.lifecycle_state() in self.INTERRUPTIBLE
        if self.received is not None:  # a signal came while the node was being built
            self._wake()

    @property
    def name(self) -> str:
        return signal.Signals(self.received).name if self.received is not None else "shutdown"

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._count += 1
        if self.received is None:
            self.received = signum
        if self._count > 1:
            raise KeyboardInterrupt
        try:
            interrupt = self._interrupt_now()
        except Exception:  # noqa: BLE001 - the node is gone already: nothing to cut short
            interrupt = False
        if interrupt:
            raise KeyboardInterrupt

    def _watch(self) -> None:
        while True:
            try:
                data = os.read(self._read_fd, 64)
            except OSError:
                return
            if not data:  # restore() closed the pipe's write end
                os.close(self._read_fd)
                return
            if self.received is None and data[0] in self.SIGNALS:
                self.received = data[0]
            try:
                self._wake()
            except Exception:  # noqa: BLE001 - the node (and its guard condition) may be gone already
                pass

    def restore(self) -> None:
        """Put the previous handlers back and end the watcher thread."""
        signal.set_wakeup_fd(self._previous_fd)
        for s, handler in self._previous_handlers.items():
            signal.signal(s, handler)
        self._wake = lambda: None
        os.close(self._write_fd)  # the watcher reads EOF, closes the read end and ends


def _shut_down(node: PolicyNode, why: str) -> None:
    """Leave through the lifecycle shutdown transition where one exists (on_shutdown: the last hold,
    then the release); a configure cut short by the signal left nothing to hold. Without a ROS
    context (shut down from elsewhere) nothing can be published: release and destroy only."""
    if rclpy.ok():
        node.get_logger().info(f"{why}: shutting down")
        if node.lifecycle_state() in ("unconfigured", "inactive", "active"):
            node.trigger_shutdown()
    node._release(SHUTDOWN_INFERENCE_WAIT_S)  # noqa: SLF001 - what is left (a configure cut short): no long wait either
    node.destroy_node()


def _exit_now() -> None:
    """End the process at once, skipping the interpreter's teardown. For after a stop signal only,
    once the node is shut down and the ROS context with it (the DDS participant, its shared memory
    and the log files are closed by then). The teardown is what would remain, and it is harmful
    here: it takes seconds with torch loaded on a busy CPU (2-4 s measured, against launch's
    sigterm_timeout of 5 s), and with an abandoned inference still inside the model it aborts the
    process ("terminate called without an active exception", exit -6)."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed or broken pipe: nothing more to say anyway
            pass
    os._exit(0)


def main(args: list[str] | None = None) -> None:
    """policy_node. SIGINT / SIGTERM: see StopSignals; the node shuts down (the last hold, then the
    release) and the process exits 0 without the interpreter's teardown (see _exit_now)."""
    own_signals = threading.current_thread() is threading.main_thread()  # signal handlers need it
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO if own_signals else None)
    stop = StopSignals() if own_signals else None
    node: PolicyNode | None = None
    try:
        try:
            options = parse_arguments(remove_ros_args(args if args is not None else sys.argv)[1:])
            node = PolicyNode(autostart=options.autostart)
            forward_python_logging(node)
            executor = SingleThreadedExecutor()
            executor.add_node(node)
            if stop is None:
                executor.spin()
            else:
                stop.attach(node)
                while stop.received is None and rclpy.ok():
                    executor.spin_once()
        except (KeyboardInterrupt, ExternalShutdownException):
            pass
        finally:
            if node is not None:
                _shut_down(node, stop.name if stop is not None else "shutdown")
    except KeyboardInterrupt:  # another signal while shutting down: leave at once
        pass
    finally:
        if stop is not None:
            stop.restore()
        rclpy.try_shutdown()
    if stop is not None and stop.received is not None:  # stopped by a signal, nothing raised: done
        _exit_now()


if __name__ == "__main__":
    main()
