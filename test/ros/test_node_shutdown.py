"""policy_node stops on SIGINT / SIGTERM, as launch and a terminal's Ctrl-C stop it.

The node runs as its own process (the installed console script, as policy.launch.py starts it) and
is signalled from here. On a stop signal it must leave through its shutdown transition with the ROS
context still up: a node that was following publishes its last hold first, a running inference is
not waited for beyond a moment (it holds no robot command), and the process exits with status 0
and no traceback. Before, rclpy's own handlers shut the context down under the executor: no hold,
and on SIGTERM an RCLError traceback with exit 1 (what launch's escalation ran into).

The bound on the exit time (EXIT_BOUND_S) is generous on purpose: these tests catch a node that
hangs or waits for inference, not a slow machine; no speed is asserted. The chunk steps run at
5 Hz (same weights as the demo bundle), so chunks outlast inference on a busy CPU and the node
really follows the policy when it is stopped.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from node_harness import RobotStandIn, ros_context, spinning

from lightwam_ros.demo.tiny_bundle import write_demo_bundle
from lightwam_ros.ros.launch_config import plan_from_arguments

REPO_ROOT = Path(__file__).resolve().parents[2]
ACTION_RATE_HZ = 5.0  # a 24-step chunk lasts 4.8 s
EXIT_BOUND_S = 30.0  # signal -> process gone; the node needs well under a second of it
START_TIMEOUT_S = 240.0  # configure on a loaded CPU (bundle check, model load, warm-up)


@pytest.fixture(scope="module")
def slow_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_demo_bundle(tmp_path_factory.mktemp("bundle") / "demo_tiny_5hz", "tiny", seed=0,
                             action_rate_hz=ACTION_RATE_HZ).path


class NodeProcess:
    """policy_node started as launch starts it (the plan's command line), output in a log file."""

    def __init__(self, bundle: Path, tmp_path: Path, *, autostart: bool = True):
        plan = plan_from_arguments({"robot": "demo", "bundle": str(bundle), "autostart": str(autostart).lower()},
                                   share_dir=REPO_ROOT)
        self.parameters = plan.parameters
        self.policy_name = plan.fully_qualified_name
        script = Path(sys.executable).parent / "policy_node"
        exe = [str(script)] if script.exists() else [sys.executable, "-m", "lightwam_ros.ros.node"]
        argv = exe + plan.command("policy_node", plan.write_params_file(tmp_path))[1:]
        self.log_path = tmp_path / "node.log"
        self._log = open(self.log_path, "w")  # noqa: SIM115 - the node's stdout, closed in close()
        env = plan.environment() | {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        # its own session: a test that fails never leaves the node behind (kill() takes the group)
        self.proc = subprocess.Popen(argv, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def output(self) -> str:
        return self.log_path.read_text()

    def wait_for_log(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return
            assert self.proc.poll() is None, f"the node exited (rc {self.proc.returncode}):\n{self.output()}"
            time.sleep(0.1)
        raise AssertionError(f"no {text!r} in the node's log after {timeout} s:\n{self.output()}")

    def stop(self, sig: signal.Signals) -> tuple[int | None, float]:
        """Send ``sig`` and wait for the exit: (exit status or None if still running after
        EXIT_BOUND_S, time.monotonic() when the signal was sent)."""
        sent = time.monotonic()
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=EXIT_BOUND_S), sent
        except subprocess.TimeoutExpired:
            return None, sent

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self._log.close()


@pytest.fixture
def node_process(tmp_path: Path):
    started: list[NodeProcess] = []

    def start(bundle: Path, **kwargs) -> NodeProcess:
        started.append(NodeProcess(bundle, tmp_path, **kwargs))
        return started[-1]

    yield start
    for p in started:
        p.kill()


def _assert_clean_exit(node: NodeProcess, rc: int | None, sig: signal.Signals) -> str:
    output = node.output()
    assert rc is not None, f"policy_node still running {EXIT_BOUND_S} s after {sig.name}:\n{output}"
    assert rc == 0, f"policy_node exited with {rc} after {sig.name}:\n{output}"
    assert "Traceback" not in output and "terminate called" not in output, output
    assert f"{sig.name}: shutting down" in output, output
    return output


def test_sigint_while_following_publishes_the_last_hold_and_exits(slow_bundle, node_process) -> None:
    node = node_process(slow_bundle)
    with ros_context() as ctx:
        robot = RobotStandIn(ctx, node.parameters, instruction="pick up the red block", policy_name=node.policy_name)
        with spinning([robot]):
            node.wait_for_log("active:", START_TIMEOUT_S)
            # following: a chunk's trajectory (more than one point) just arrived, seconds of plan ahead
            robot.wait_for(lambda r: any(len(m.points) > 1 for _, m in r.trajectories), START_TIMEOUT_S,
                           f"the node following a chunk (log: {node.log_path})")
            rc, signalled = node.stop(signal.SIGINT)
            time.sleep(1.0)  # anything still on its way arrives
            at_exit = robot.snapshot()
            time.sleep(1.0)
            after = robot.snapshot()
        robot.destroy_node()
    assert rc is not None, f"policy_node still running {EXIT_BOUND_S} s after SIGINT:\n{node.output()}"
    holds = [m for t, m in at_exit.trajectories if t >= signalled and len(m.points) == 1]
    assert holds, f"no hold (one-point trajectory) after SIGINT; the node was following:\n{node.output()}"
    assert len(at_exit.trajectories[-1][1].points) == 1, "the last trajectory must be the hold"
    _assert_clean_exit(node, rc, signal.SIGINT)
    assert (len(after.trajectories), len(after.chunks), len(after.diagnostics)) == \
        (len(at_exit.trajectories), len(at_exit.chunks), len(at_exit.diagnostics)), "published after its exit"


def test_sigterm_during_configure_exits(slow_bundle, node_process) -> None:
    """SIGTERM (launch's escalation) during configure: the node cuts the model load / warm-up
    short (up to a minute on a busy CPU) instead of finishing it first -- where the signal still
    lands inside configure; on a fast machine configure may be over by then, which is fine too."""
    node = node_process(slow_bundle)
    node.wait_for_log("torch backend:", START_TIMEOUT_S)  # the pipeline is being built: configuring
    rc, _ = node.stop(signal.SIGTERM)
    output = _assert_clean_exit(node, rc, signal.SIGTERM)
    assert "configure failed" not in output, output  # a stop is no configuration error


def test_sigint_while_idle_unconfigured_exits(slow_bundle, node_process) -> None:
    """Without --autostart nothing wakes the executor on its own (no timers): the signal itself must."""
    node = node_process(slow_bundle, autostart=False)
    with ros_context() as ctx:
        probe = RobotStandIn(ctx, node.parameters, policy_name=node.policy_name)
        probe.publish_cameras = probe.publish_joints = False
        with spinning([probe]):
            deadline = time.monotonic() + START_TIMEOUT_S
            state = "not answered"
            while state != "unconfigured":
                assert time.monotonic() < deadline and node.proc.poll() is None, f"{state}:\n{node.output()}"
                try:
                    state = probe.lifecycle_state()
                except TimeoutError:
                    pass
            time.sleep(1.0)  # the executor is back in its wait
            rc, _ = node.stop(signal.SIGINT)
        probe.destroy_node()
    _assert_clean_exit(node, rc, signal.SIGINT)
