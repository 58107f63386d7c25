"""PolicyNode lifecycle over its standard services, configure failures, and the launch command line.

- Transitions are driven from another node through <node>/change_state, as a lifecycle manager or
  `ros2 lifecycle set` would. Forward mode is used because it commands every control tick, so
  "commands only while active" and the control rate are directly observable.
- A user's mistake (wrong parameter, missing or corrupted bundle) must fail configure with exactly
  one error naming the parameter or file, and leave the node unconfigured (and re-configurable).
- The launch plan's command line (what policy.launch.py runs) starts a working node in a namespace.

Nodes run on the wall clock here. Where a test needs chunks to arrive before they expire, the bundle
declares 5 Hz chunk steps (a 24-step chunk lasts 4.8 s; same weights as the demo bundle) and torch
runs one thread, so inference fits a chunk on a slow or busy machine too; no wall-clock speed is
asserted (rates are bounded from above only).
"""

from __future__ import annotations

import gc
import shutil
import signal
import subprocess
import sys
import time
import weakref
from pathlib import Path

import pytest
from lifecycle_msgs.msg import Transition
from node_harness import RobotStandIn, as_overrides, demo_parameters, ros_context, spinning

from lightwam_ros.demo.tiny_bundle import write_demo_bundle
from lightwam_ros.ros.launch_config import plan_from_arguments
from lightwam_ros.ros.node import PolicyNode

REPO_ROOT = Path(__file__).resolve().parents[2]
ACTION_RATE_HZ = 5.0  # chunk steps of the slow_bundle (module doc)


@pytest.fixture(scope="module")
def slow_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny demo bundle declaring 5 Hz chunk steps: a chunk outlasts inference on any CPU here."""
    return write_demo_bundle(tmp_path_factory.mktemp("bundle") / "demo_tiny_5hz", "tiny", seed=0,
                             action_rate_hz=ACTION_RATE_HZ).path


def _command_rate(robot: RobotStandIn, seconds: float) -> float:
    time.sleep(0.3)
    start = time.monotonic()
    time.sleep(seconds)
    return sum(1 for t, _ in robot.snapshot().commands if t >= start) / seconds


def test_lifecycle_transitions_over_services(slow_bundle) -> None:
    params = demo_parameters(slow_bundle, output__mode="forward", output__topic="/demo/forward_controller/commands")
    with ros_context() as ctx:
        node = PolicyNode("lw_lifecycle", context=ctx, parameter_overrides=as_overrides(params))  # no autostart
        robot = RobotStandIn(ctx, params, instruction="pick up the red block", policy_name="/lw_lifecycle")
        with spinning([node, robot]):
            assert robot.lifecycle_state() == "unconfigured"
            assert node.controller is None

            assert robot.lifecycle(Transition.TRANSITION_CONFIGURE)
            assert robot.lifecycle_state() == "inactive"
            pipeline_ref = weakref.ref(node.loaded.pipeline)
            assert _command_rate(robot, 1.0) == 0.0  # configured but inactive: nothing commanded

            assert robot.lifecycle(Transition.TRANSITION_ACTIVATE)
            assert robot.lifecycle_state() == "active"
            robot.wait_for(lambda r: len(r.commands) >= 5, 30, "forward commands")
            # a command every tick, holding or following: never more often than the timer's period
            # (how close a busy machine gets to it is a wall-clock speed, not asserted)
            assert node.control_timer.timer_period_ns == round(1e9 / params["control_rate_hz"])
            rate = _command_rate(robot, 2.0)
            assert 0 < rate <= 1.05 * params["control_rate_hz"], rate
            robot.wait_for(lambda r: len(r.chunks) >= 1, 90, "a chunk")
            assert all(len(m.data) == 14 for _, m in robot.snapshot().commands)

            assert robot.lifecycle(Transition.TRANSITION_DEACTIVATE)
            assert robot.lifecycle_state() == "inactive"
            assert _command_rate(robot, 1.0) == 0.0

            assert robot.lifecycle(Transition.TRANSITION_CLEANUP)
            assert robot.lifecycle_state() == "unconfigured"
            assert node.controller is None
            gc.collect()
            assert pipeline_ref() is None, "cleanup must drop every reference to the model"

            assert robot.lifecycle(Transition.TRANSITION_CONFIGURE)  # configurable again
            assert robot.lifecycle(Transition.TRANSITION_ACTIVATE)
            robot.clear()
            robot.wait_for(lambda r: len(r.commands) >= 5, 30, "commands after re-activation")
        node.destroy_node()
        robot.destroy_node()


def _corrupt_copy(bundle: Path, dst: Path) -> Path:
    shutil.copytree(bundle, dst)
    target = dst / "expert.safetensors"
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF  # one flipped bit in the weights
    target.write_bytes(bytes(data))
    return dst


@pytest.mark.parametrize("case", ["topics_length", "unknown_parameter", "out_of_range", "missing_bundle",
                                  "camera_not_in_bundle", "corrupted_bundle"])
def test_bad_configuration_fails_configure_with_one_message(case: str, tiny_bundle, tmp_path: Path) -> None:
    params = demo_parameters(tiny_bundle)
    expect: tuple[str, ...]
    if case == "topics_length":
        params["cameras.topics"] = params["cameras.topics"][:2]
        expect = ("cameras.topics", "3 cameras")
    elif case == "unknown_parameter":
        params["sync.slp"] = 0.05
        expect = ("sync.slp", "sync.slop")
    elif case == "out_of_range":
        params["control_rate_hz"] = 5000.0
        expect = ("control_rate_hz",)
    elif case == "missing_bundle":
        params["bundle"] = str(tmp_path / "no_such_bundle")
        expect = ("bundle", "no_such_bundle")
    elif case == "camera_not_in_bundle":
        params["cameras.names"] = ["cam_high", "cam_left_wrist", "cam_top"]
        expect = ("cameras.names", "cam_top")
    else:
        params["bundle"] = str(_corrupt_copy(tiny_bundle, tmp_path / "corrupt"))
        expect = ("expert.safetensors",)
    with ros_context() as ctx:
        # A unique node name per case: rcl keys its /rosout publishers by logger name process-wide,
        # and several same-named nodes in successive contexts of one process lose their /rosout.
        name = f"lw_bad_{case}"
        node = PolicyNode(name, context=ctx, parameter_overrides=as_overrides(params))
        robot = RobotStandIn(ctx, demo_parameters(tiny_bundle), policy_name=f"/{name}")
        with spinning([node, robot]):
            time.sleep(1.0)  # let /rosout match before the failure is logged
            assert not robot.lifecycle(Transition.TRANSITION_CONFIGURE)
            assert robot.lifecycle_state() == "unconfigured"
            deadline = time.monotonic() + 5.0
            while not robot.errors() and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.3)
            errors = robot.errors()
            assert len(errors) == 1, errors
            for word in expect:
                assert word in errors[0], (word, errors[0])
            assert node.controller is None
        node.destroy_node()
        robot.destroy_node()


def test_fixed_parameter_makes_configure_succeed(tiny_bundle) -> None:
    """A bad value from the params file can be corrected at runtime, then configure succeeds."""
    params = demo_parameters(tiny_bundle, control_rate_hz=5000.0)
    with ros_context() as ctx:
        node = PolicyNode("lw_fixed", context=ctx, parameter_overrides=as_overrides(params))
        robot = RobotStandIn(ctx, params, policy_name="/lw_fixed")
        with spinning([node, robot]):
            assert not robot.lifecycle(Transition.TRANSITION_CONFIGURE)
            (result,) = robot.set_parameters(control_rate_hz=40.0)
            assert result.successful, result.reason
            assert robot.lifecycle(Transition.TRANSITION_CONFIGURE)
            assert node.controller.config.control_rate_hz == 40.0
        node.destroy_node()
        robot.destroy_node()


def _policy_node_command() -> list[str]:
    script = Path(sys.executable).parent / "policy_node"
    return [str(script)] if script.exists() else [sys.executable, "-m", "lightwam_ros.ros.node"]


def test_launch_plan_command_starts_an_acting_node_in_a_namespace(slow_bundle, tmp_path: Path) -> None:
    """What policy.launch.py does, without launch_ros: the plan's command line, namespace, remap,
    bundle override and --autostart; the node must come up active and publish trajectories."""
    plan = plan_from_arguments({"robot": "demo", "bundle": str(slow_bundle), "namespace": "cell1", "dtype": "bfloat16",
                                "remap": "/demo/arm_controller/joint_trajectory:=/cell1/jtc/joint_trajectory"},
                               share_dir=REPO_ROOT)
    params_file = plan.write_params_file(tmp_path)
    argv = _policy_node_command() + plan.command("policy_node", params_file)[1:]
    log = open(tmp_path / "node.log", "w")  # noqa: SIM115 - the node's stdout, closed below
    env = plan.environment() | {"OMP_NUM_THREADS": "1"}  # one torch thread: robust when cores are busy
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        robot_params = dict(plan.parameters, **{"output.topic": "/cell1/jtc/joint_trajectory"})
        with ros_context() as ctx:
            robot = RobotStandIn(ctx, robot_params, instruction="pick up the red block",
                                 policy_name="/cell1/lightwam_policy")
            with spinning([robot]):
                robot.wait_for(lambda r: sum(len(m.points) > 1 for _, m in r.trajectories) >= 2, 180,
                               f"trajectories from the launched node (log: {tmp_path / 'node.log'})")
                assert robot.lifecycle_state() == "active"
                assert robot.snapshot().chunks, "~/action_chunk must be under the node's namespace"
            robot.destroy_node()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            rc = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
        log.close()
    output = (tmp_path / "node.log").read_text()
    assert rc == 0, output
    assert "Traceback" not in output, output
    assert "configured in" in output and "/cell1/jtc/joint_trajectory" in output, output
    # the dtype override arrived, and the library's Python warnings reach the ROS log
    assert "[lightwam_ros.inference.pipeline] dtype bfloat16 requested on the CPU" in output, output
