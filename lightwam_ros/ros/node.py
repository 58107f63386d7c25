"""PolicyNode: the lifecycle node that wires cameras, joint state and instruction to the policy and
the policy's action chunks to a trajectory executor.

What is here: parameters (declared from the table in config/), the lifecycle, the ROS entities
(subscriptions, publishers, timers, services) and the process's signal handling. What is not:
every decision (sync, pairing a frame set with the joint state, instruction gating, scheduling,
safety, holds) is control/controller.py's PolicyController, and message conversion is
ros/bridge.py's PolicyBridge; the subscriptions and the control timer call the bridge directly.
Offline replay and the simulated-clock tests run the same controller and bridge without this node
(replay/simulation.py).

Lifecycle (a ROS 2 managed node; driven by ``--autostart`` or from outside over the standard
lifecycle services, e.g. ``ros2 lifecycle set /lightwam_policy configure``):
- configure: parameters -> PolicyConfig -> bundle loaded and verified -> config checked against the
  bundle -> PolicyPipeline on the backend/device/dtype -> warm-up (ros/assembly.py); controller,
  subscriptions, the inference workers and diagnostics start. Any failure: one error naming the
  parameter or file, FAILURE, and the node stays unconfigured (fix the parameter, configure again).
- activate: the control timer starts and the outputs are enabled. The first command holds the
  measured joint positions until the first chunk arrives.
- deactivate: one hold is sent (the executor stops where it was told to be), control stops.
- cleanup: workers stopped, pipeline closed (device memory released), everything dropped.

Threads: callbacks (images, joint state, instruction, control timer, services, parameters) run on
ONE SingleThreadedExecutor thread, so the controller has a single owner and needs no locks. Model
inference runs in plain worker threads (inference.pool.InferencePool: min(chunk.max_inflight, the
backend's max_concurrency) of them, so requests overlap where the backend gains from it -- CUDA
eager / ONNX CUDA -- and run one at a time on the CPU, with CUDA graphs and torch.compile) and meets
the executor only at a locked request/result handoff; each finished chunk is merged as if it
arrived when its worker finished. Why not an executor callback or a MultiThreadedExecutor:
inference takes longer than a control period and a multi-threaded executor made the 50 Hz timer
jitter worse (docs/design.md, "Threading and timing model"). With control.realtime_priority the
executor thread makes itself SCHED_FIFO at its first control tick (realtime.py), after the workers
exist, so they keep normal scheduling.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

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
from rclpy.signals import SignalHandlerOptions
from rclpy.utilities import remove_ros_args
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Float64MultiArray, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from lightwam_ros import config as cfgmod
from lightwam_ros.config import ConfigError, OutputMode, PolicyConfig
from lightwam_ros.control.controller import Clocks, PolicyController, Topics
from lightwam_ros.ros import qos
from lightwam_ros.ros.assembly import LoadedPolicy, build_controller, inference_pool, load_policy
from lightwam_ros.ros.bridge import PolicyBridge, Publishers
from lightwam_ros.ros.decode_thread import DecodeThread
from lightwam_ros.ros.images import time_to_ns

NODE_NAME = cfgmod.NODE_NAME
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

    loaded: LoadedPolicy
    controller: PolicyController
    bridge: PolicyBridge
    subscriptions: list = field(default_factory=list)
    publishers: list = field(default_factory=list)
    timers: list = field(default_factory=list)
    services: list = field(default_factory=list)
    control_timer: Any = None
    decoder: DecodeThread | None = None  # compressed cameras only
    decoder_wake: Any = None  # its guard condition
    realtime_done: bool = False  # control.realtime_priority / switch_interval applied (first tick)


class PolicyNode(LifecycleNode):
    """Lifecycle policy node; see the module docstring for the transitions and threads."""

    def __init__(self, node_name: str = NODE_NAME, *, autostart: bool = False, log: Any = None, **kwargs: Any):
        """``log``: where the node's own messages go (default: its ROS logger); anything with
        rclpy's logger methods (tests pass a recorder)."""
        super().__init__(node_name, **kwargs)
        self._log = log if log is not None else self.get_logger()
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
        ok, why = rt.bridge.update_parameters(changes)
        if not ok:
            return SetParametersResult(successful=False, reason=why)
        self._log.info(f"parameters updated: {sorted(changes)}")
        return SetParametersResult(successful=True)

    # -- lifecycle ---------------------------------------------------------------------------------

    def _autostart(self) -> None:
        self.destroy_timer(self._autostart_timer)
        self._autostart_timer = None
        if self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
            self.trigger_activate()
        else:
            self._log.error("autostart: configure failed; fix the parameter named above and "
                                    "configure again (ros2 lifecycle set <node> configure)")

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        t0 = time.monotonic()
        try:
            self._rt = self._build_runtime()
        except ConfigError as exc:
            self._log.error(f"configure failed: {exc}")
            return TransitionCallbackReturn.FAILURE
        except Exception as exc:  # noqa: BLE001 - bundle, backend, device errors name their file/parameter
            self._log.error(f"configure failed: {type(exc).__name__}: {exc}")
            return TransitionCallbackReturn.FAILURE
        rt = self._rt
        cfg, model = rt.controller.config, rt.controller.model
        self._log.info(
            f"configured in {time.monotonic() - t0:.1f} s: bundle {rt.loaded.pipeline.bundle.path} on "
            f"{model.backend}/{model.device}/{model.dtype}, {len(cfg.cameras.names)} cameras, "
            f"output {cfg.output.mode.value} -> {self._output_topic_name()}{' (dry run)' if cfg.dry_run else ''}")
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        rt = self._rt
        ret = super().on_activate(state)  # enables the lifecycle publishers
        rt.controller.activate()
        rt.control_timer = self.create_timer(1.0 / rt.controller.config.control_rate_hz, self._on_control_tick)
        self._log.info(f"active: control at {rt.controller.config.control_rate_hz:g} Hz")
        return ret

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_control(self._rt)
        self._log.info("inactive: holding, no commands")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        self._log.info("cleaned up: model released")
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """To finalized (over the lifecycle service, or from main() on SIGINT/SIGTERM): a node that
        was following sends its last hold first (and gives it SHUTDOWN_ACK_WAIT_S to reach reliable
        subscribers before the publisher goes), then everything is released without waiting more
        than SHUTDOWN_INFERENCE_WAIT_S for a running inference: it holds no robot command, and the
        process is about to end."""
        rt = self._rt
        try:
            if rt is not None and rt.controller.active:
                if self._stop_control(rt):
                    rt.bridge.publishers.output.wait_for_all_acked(Duration(nanoseconds=int(SHUTDOWN_ACK_WAIT_S * 1e9)))
        finally:  # released here even if the hold failed (on_error would wait for the inference)
            self._release(SHUTDOWN_INFERENCE_WAIT_S)
        return super().on_shutdown(state)

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._log.error("lifecycle error: releasing everything (back to unconfigured)")
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def destroy_node(self) -> None:
        self._release()
        super().destroy_node()

    def lifecycle_state(self) -> str:
        """The lifecycle state's label: a primary state (unconfigured, inactive, active, finalized)
        or, while a transition callback runs, its transition state (configuring, shuttingdown, ...)."""
        return self._state_machine.current_state[1]

    def _stop_control(self, rt: _Runtime) -> bool:
        """Deactivate the controller (publishing its last hold, if any) and stop the control timer;
        True if a hold was published."""
        held = rt.bridge.stop()
        if rt.control_timer is not None:
            self.destroy_timer(rt.control_timer)
            rt.control_timer = None
        return held

    # -- configure: build everything ---------------------------------------------------------------

    def _build_runtime(self) -> _Runtime:
        if self._declare_error is not None:
            raise self._declare_error
        cfg = cfgmod.from_params(self._parameter_values())
        loaded = load_policy(cfg, self._log)
        try:
            pool = inference_pool(loaded)
            try:
                return self._wire(loaded, cfg, pool)
            except BaseException:
                pool.close()
                raise
        except BaseException:
            loaded.close()
            raise

    def _wire(self, loaded: LoadedPolicy, cfg: PolicyConfig, pool: Any) -> _Runtime:
        clocks = Clocks(now_ns=lambda: self.get_clock().now().nanoseconds, mono_ns=time.monotonic_ns)
        topics = Topics(self.resolve_topic_name(cfg.joints.state_topic), self.resolve_topic_name(cfg.instruction.topic))
        controller = build_controller(loaded, cfg, pool, clocks, self._log,
                                      name=self.get_fully_qualified_name(), topics=topics)
        publishers = Publishers(output=None, action_chunk=None, canvas=None, diagnostics=None)
        bridge = PolicyBridge(controller, publishers, self._log, resolve_topic=self.resolve_topic_name,
                              canvas_for=loaded.canvas_for)
        rt = _Runtime(loaded=loaded, controller=controller, bridge=bridge)
        try:
            camera_qos = qos.camera_qos(cfg.sync.queue_size)
            if "compressed" in cfg.cameras.transports:
                self._start_decoder(rt, len(cfg.cameras.names) * cfg.sync.queue_size)
            for camera in cfg.cameras.names:
                topic = cfg.cameras.subscribed_topic(camera)
                if cfg.cameras.compressed(camera):
                    decoder = rt.decoder  # queues the message; the decode runs on its thread
                    rt.subscriptions.append(self.create_subscription(
                        CompressedImage, topic,
                        lambda msg, c=camera, t=topic, d=decoder: d.submit(msg, c, t, time_to_ns(msg.header.stamp)),
                        camera_qos))
                else:
                    rt.subscriptions.append(self.create_subscription(
                        Image, topic, lambda msg, c=camera, t=topic: bridge.on_image(msg, c, t), camera_qos))
            rt.subscriptions.append(self.create_subscription(
                JointState, cfg.joints.state_topic, bridge.on_joint_state, qos.joint_state_qos()))
            rt.subscriptions.append(self.create_subscription(
                String, cfg.instruction.topic, bridge.on_instruction, qos.instruction_qos()))
            if cfg.output.mode is OutputMode.JOINT_TRAJECTORY:
                publishers.output = self.create_lifecycle_publisher(JointTrajectory, cfg.output.topic,
                                                                    qos.output_qos())
            elif cfg.output.mode is OutputMode.FORWARD:
                publishers.output = self.create_lifecycle_publisher(Float64MultiArray, cfg.output.topic,
                                                                    qos.output_qos())
            publishers.action_chunk = self.create_lifecycle_publisher(JointTrajectory, "~/action_chunk",
                                                                      qos.output_qos())
            publishers.canvas = self.create_lifecycle_publisher(Image, "~/debug/canvas", qos.canvas_qos())
            publishers.diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", qos.diagnostics_qos())
            rt.publishers += [p for p in (publishers.output, publishers.action_chunk, publishers.canvas,
                                          publishers.diagnostics) if p is not None]
            rt.timers.append(self.create_timer(1.0 / cfg.diagnostics_rate_hz, bridge.on_diagnostics))
            rt.services += [self.create_service(Trigger, "~/pause", self._on_pause),
                            self.create_service(Trigger, "~/resume", self._on_resume)]
        except BaseException:
            self._destroy_entities(rt)
            raise
        return rt

    def _start_decoder(self, rt: _Runtime, capacity: int) -> None:
        """Compressed frames are decoded on a thread of their own (ros/decode_thread.py); its guard
        condition brings them back to this executor thread, to the controller's single owner."""
        def take_decoded() -> None:
            decoder = rt.decoder
            if decoder is None:
                return
            for frame in decoder.drain():
                rt.bridge.on_decoded(frame)
            for camera, n in decoder.take_dropped().items():
                rt.controller.on_lost_frames(camera, "decode_backlog", n)

        rt.decoder_wake = self.create_guard_condition(take_decoded)
        decoder = rt.loaded.compressed_decoder()
        rt.decoder = DecodeThread(
            lambda msg, camera, topic: decoder.decode(msg, camera, self.resolve_topic_name(topic)),
            rt.decoder_wake.trigger, capacity=capacity)

    def _destroy_entities(self, rt: _Runtime) -> None:
        if rt.decoder is not None:
            rt.decoder.close()
            rt.decoder = None
        if rt.decoder_wake is not None:
            self.destroy_guard_condition(rt.decoder_wake)
            rt.decoder_wake = None
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
        """Stop the workers, destroy every entity, close the pipeline (frees device memory).

        A running inference gets ``inference_wait_s`` to finish (cleanup: the model must be closed
        before a new configure loads another; shutdown: short, see on_shutdown). One still running
        then is abandoned in its daemon thread, and the model stays open under it -- closing it
        could crash the call; it goes with its last reference or with the process."""
        rt, self._rt = self._rt, None
        if rt is None:
            return
        self._destroy_entities(rt)
        if not rt.controller.close(inference_wait_s) and getattr(rt.controller.pool, "running", 0):
            self._log.warning(
                f"an inference still running after {inference_wait_s:g} s was abandoned (its result is "
                "dropped); the model stays loaded until it ends")
            return
        rt.loaded.close(min(TEXT_ENCODER_WAIT_S, inference_wait_s))

    # -- control -----------------------------------------------------------------------------------

    def _on_control_tick(self) -> None:
        rt = self._rt
        if rt is None or not rt.controller.active:
            return
        if not rt.realtime_done:
            self._apply_realtime(rt)
        rt.bridge.on_tick()

    def _apply_realtime(self, rt: _Runtime) -> None:
        """control.realtime_priority / switch_interval, once per configured runtime, from the control
        tick: it runs on the executor thread, the one to promote (realtime.py), and after the pool's
        threads exist, so they do not inherit SCHED_FIFO."""
        rt.realtime_done = True
        rc = rt.controller.config.realtime
        if not (rc.priority or rc.switch_interval_s):
            return
        from lightwam_ros.ros.realtime import apply_realtime

        msg = apply_realtime(rc.priority, rc.switch_interval_s or None)
        (self._log.warning if msg.startswith("warning:") else self._log.info)(msg)

    # -- services ----------------------------------------------------------------------------------

    def _on_pause(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        rt = self._rt
        response.success, response.message = rt.controller.pause() if rt is not None else (False, "not active")
        if response.success:
            self._log.info("paused")
        return response

    def _on_resume(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        rt = self._rt
        response.success, response.message = rt.controller.resume() if rt is not None else (False, "not active")
        if response.success:
            self._log.info("resumed")
        return response

    # -- introspection (tests, demo) ---------------------------------------------------------------

    @property
    def controller(self) -> PolicyController | None:
        """The configured controller (None when unconfigured). Read-only use from the executor thread."""
        return self._rt.controller if self._rt is not None else None

    @property
    def loaded(self) -> LoadedPolicy | None:
        """The loaded policy (None when unconfigured)."""
        return self._rt.loaded if self._rt is not None else None

    @property
    def control_timer(self) -> Any:
        """The active control timer (None when inactive)."""
        return self._rt.control_timer if self._rt is not None else None

    def release(self, inference_wait_s: float = CLEANUP_INFERENCE_WAIT_S) -> None:
        """Drop the runtime now (main(): what is left after a configure cut short by a signal)."""
        self._release(inference_wait_s)

    def _output_topic_name(self) -> str:
        rt = self._rt
        if rt is None or rt.controller.config.output.mode is OutputMode.NONE:
            return "(none)"
        return self.resolve_topic_name(rt.controller.config.output.topic)


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
    node.release(SHUTDOWN_INFERENCE_WAIT_S)  # what is left (a configure cut short): no long wait either
    node.destroy_node()


def exit_now() -> None:
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
    release) and the process exits 0 without the interpreter's teardown (see exit_now)."""
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
        exit_now()


if __name__ == "__main__":
    main()
