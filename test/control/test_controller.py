"""PolicyController and its parts driven as plain Python: no DDS, no rclpy, no torch, no model.

The controller is given a stub pool whose chunks are a known function of the observation time, a
stub instruction source and a simulated clock; every decision (pairing, gating, holding, merging,
clock jumps) is checked from the commands it returns. The simulated-clock fault and property tests
drive the same controller behind the ROS bridge with the real model; these pin the decisions
themselves, fast enough for `make test-unit`.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from typing import Any, NamedTuple

import numpy as np
import pytest

from lightwam_ros import config as cfgmod
from lightwam_ros.config import MAX_INSTRUCTION_CHARS, MAX_JOINT_NAMES
from lightwam_ros.control.controller import (
    Clocks,
    ForwardCommand,
    ModelInfo,
    PolicyController,
    Topics,
    TrajectoryCommand,
)
from lightwam_ros.control.instruction import InstructionGate
from lightwam_ros.control.joint_input import JOINT_INDEX_CACHE, JointStateInput
from lightwam_ros.control.logs import ThrottledLogger
from lightwam_ros.control.safety import HoldReason
from lightwam_ros.control.scheduler import ChunkOutcome
from lightwam_ros.types import ActionChunk, FrameSet

MS = 1_000_000
S = 1_000_000_000
T0 = 1_000 * S
KNOWN = "pick up the red block"
TRAINED_STEPS = 24


def demo_config(**changes: Any) -> cfgmod.PolicyConfig:
    _, params = cfgmod.load_profile("demo")
    params.update({k.replace("__", "."): v for k, v in changes.items()})
    return cfgmod.from_params(params)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now


class Result(NamedTuple):
    ticket: Any
    request: Any
    chunk: ActionChunk | None
    error: str | None
    finished_monotonic_ns: int


class StubPool:
    """Finishes each request ``latency`` after its submit; the chunk is the joint state plus a
    small ramp, so where the robot is told to go is known exactly."""

    def __init__(self, clock: Clock, latency_ns: int = 40 * MS, dims: int = 14, nan: bool = False) -> None:
        self.clock, self.latency_ns, self.dims, self.nan = clock, latency_ns, dims, nan
        self.pending: list[Result] = []
        self.requests: list[FrameSet] = []

    workers = 1

    @property
    def busy(self) -> bool:
        return len(self.pending) >= 1

    def submit(self, ticket: Any, request: FrameSet) -> bool:
        self.requests.append(request)
        ramp = 0.001 * np.arange(32)[:, None] * np.ones((1, self.dims))
        actions = np.asarray(request.state, dtype=np.float64)[None, : self.dims] + ramp
        if self.nan:
            actions[0, 0] = np.nan
        chunk = ActionChunk(actions=actions.astype(np.float32), stamp_ns=request.stamp_ns, dt_ns=20 * MS,
                            trained_steps=TRAINED_STEPS)
        self.pending.append(Result(ticket, request, chunk, None, self.clock.now + self.latency_ns))
        return True

    def poll(self) -> list[Result]:
        done = [r for r in self.pending if r.finished_monotonic_ns <= self.clock.now]
        self.pending = [r for r in self.pending if r.finished_monotonic_ns > self.clock.now]
        return done

    def close(self, timeout: float = 0.0) -> bool:
        self.pending = []
        return True


class StubInstructions:
    def __init__(self, known: tuple[str, ...] = (KNOWN,), encoding: tuple[str, ...] = ()) -> None:
        self.known, self.encoding, self.asked = known, set(encoding), []

    def status(self, text: str, quoted: str) -> tuple[bool, str, bool]:
        self.asked.append(text)
        if text in self.known:
            return True, "", True
        if text in self.encoding:
            return False, "", False
        return False, f"unknown instruction {quoted}", True

    def diagnostics(self) -> dict[str, Any]:
        return {}


class Logs:
    def __init__(self) -> None:
        self.records: list[tuple[str, str]] = []

    def __getattr__(self, level: str) -> Any:
        return lambda msg, **kw: self.records.append((level, msg))


class Rig:
    """A controller on the demo profile (forward output unless changed) with a moving clock."""

    def __init__(self, pool_kw: dict | None = None, **changes: Any) -> None:
        changes = {"output__mode": "forward", "instruction__default": KNOWN, **changes}
        self.config = demo_config(**changes)
        self.clock = Clock()
        self.pool = StubPool(self.clock, **(pool_kw or {}))
        self.logs = Logs()
        info = cfgmod.BundleInfo(self.config.cameras.names, self.config.joints.names, self.config.output.joint_names,
                                 TRAINED_STEPS, 50.0)
        self.controller = PolicyController(
            self.config, info, self.pool, StubInstructions(), Clocks(self.clock, self.clock), self.logs,
            name="/test", model=ModelInfo("stub", "cpu", "float32", 20 * MS),
            topics=Topics("/joint_states", "/instruction"))
        self.q = np.linspace(-0.3, 0.3, len(self.config.joints.names))
        self.cameras_on = True

    def step(self, ticks: int = 1) -> list[Any]:
        """Run ``ticks`` control periods with cameras at 50 Hz and joint states every tick."""
        out = []
        for _ in range(ticks):
            self.clock.now += 20 * MS
            self.controller.on_joint_state(list(self.config.joints.names), self.q.tolist(), self.clock.now)
            if self.cameras_on:
                for cam in self.config.cameras.names:
                    self.controller.on_frame(cam, self.clock.now, np.zeros((4, 4, 3), np.uint8))
            out.append(self.controller.tick())
        return out


def test_holds_until_the_first_chunk_then_follows_within_max_step() -> None:
    rig = Rig()
    rig.controller.activate()
    results = rig.step(30)
    assert results[0].hold is HoldReason.NO_CHUNK
    assert isinstance(results[0].command, ForwardCommand)  # forward mode: hold = repeat the position
    np.testing.assert_allclose(results[0].command.values, rig.q)
    following = [r for r in results if r.hold is None]
    assert following and all(isinstance(r.command, ForwardCommand) for r in following)
    cap = np.asarray(rig.config.safety.max_step)
    cmds = np.stack([r.command.values for r in results])
    assert np.all(np.abs(np.diff(cmds, axis=0)) <= cap + 1e-12)
    merged = [c for r in results for c in r.chunks]
    assert merged and merged[0].outcome is ChunkOutcome.ACCEPTED


def test_the_request_carries_the_joint_state_at_the_observation_time() -> None:
    rig = Rig()
    rig.controller.activate()
    rig.step(3)
    assert rig.pool.requests
    req = rig.pool.requests[0]
    np.testing.assert_array_equal(req.state, rig.q)
    assert req.instruction == KNOWN and set(req.images) == set(rig.config.cameras.names)


def test_inactive_and_dry_run_never_command() -> None:
    rig = Rig()
    assert all(r.command is None and r.hold is HoldReason.INACTIVE for r in rig.step(5))
    rig.controller.activate()
    rig.step(30)
    dry = dataclasses.replace(rig.controller.config, dry_run=True)
    last = rig.controller.reconfigure(dry)
    assert isinstance(last, ForwardCommand)  # one hold of the last command when dry_run switches on
    assert all(r.command is None for r in rig.step(20))


def test_a_dead_camera_holds_and_a_deactivation_sends_one_hold() -> None:
    rig = Rig(output__mode="joint_trajectory")
    rig.controller.activate()
    results = rig.step(40)
    assert any(isinstance(r.command, TrajectoryCommand) for r in results)
    rig.cameras_on = False
    held = rig.step(40)
    assert held[-1].hold is HoldReason.STALE_CAMERAS
    assert all(r.command is None for r in held[-10:])  # a trajectory controller keeps its hold
    rig.cameras_on = True
    rig.step(40)
    assert rig.controller.following
    hold = rig.controller.deactivate()
    assert isinstance(hold, TrajectoryCommand) and len(hold.points) == 1
    assert rig.controller.deactivate() is None  # nothing more once stopped


def test_a_refused_chunk_is_never_executed() -> None:
    rig = Rig(pool_kw={"nan": True})
    rig.controller.activate()
    results = rig.step(30)
    assert any(c.outcome is ChunkOutcome.REFUSED for r in results for c in r.chunks)
    assert all(r.hold is not None for r in results)
    assert any("chunk refused" in m for lv, m in rig.logs.records if lv == "error")


def test_a_backwards_clock_jump_resets_and_holds() -> None:
    rig = Rig()
    rig.controller.activate()
    rig.step(30)
    assert rig.controller.hold is None
    rig.clock.now -= 5 * S
    (result,) = rig.step(1)
    assert result.hold is not None
    assert any("clock jumped back" in m for lv, m in rig.logs.records if lv == "warning")
    rig.step(40)
    assert rig.controller.hold is None  # recovered on the new timeline


def test_pause_and_resume_answer_as_the_services_do() -> None:
    rig = Rig()
    assert rig.controller.pause() == (False, "not active")
    rig.controller.activate()
    assert rig.controller.pause()[0]
    assert rig.step(1)[0].hold is HoldReason.PAUSED
    assert rig.controller.resume()[0]


# -- JointStateInput -------------------------------------------------------------------------------

def _joints(**changes: Any) -> tuple[JointStateInput, list[str]]:
    cfg = demo_config(**changes)
    return JointStateInput(cfg, "/joint_states"), list(cfg.joints.names)


def test_joint_messages_that_cannot_be_trusted_are_dropped_with_the_reason() -> None:
    joints, names = _joints()
    q = [0.1] * len(names)
    assert joints.offer(names, q, T0, T0) is None and joints.fresh(T0)
    many = MAX_JOINT_NAMES + 1
    assert "at most" in joints.offer([f"j{i}" for i in range(many)], [0.0] * many, T0, T0)
    assert "one position per name" in joints.offer(names, q[:-1], T0, T0)
    assert "more than once" in joints.offer([*names, names[0]], [*q, 1.0], T0, T0)
    assert "lacks joints" in joints.offer(names[1:], q[1:], T0, T0)
    assert "in the future" in joints.offer(names, q, T0 + S, T0)
    assert joints.stamp_ns == T0  # none of those replaced the good state
    bad = list(q)
    bad[3] = float("nan")
    assert "NaN/Inf" in joints.offer(names, bad, T0 + MS, T0 + MS)
    assert joints.state is None and not joints.fresh(T0 + MS)  # untrustworthy: hold at once


def test_joint_name_lists_are_cached_boundedly_and_unstamped_messages_take_arrival_time() -> None:
    joints, names = _joints()
    for k in range(3 * JOINT_INDEX_CACHE):
        assert joints.offer([*names, f"extra_{k}"], [0.0] * (len(names) + 1), T0, T0) is None
    assert joints.known_name_lists() <= JOINT_INDEX_CACHE
    assert joints.offer(names, [0.0] * len(names), 0, T0 + 5 * MS) is None
    assert joints.stamp_ns == T0 + 5 * MS


def test_state_at_pairs_with_the_latest_state_at_or_before_the_observation() -> None:
    joints, names = _joints()
    for k in range(10):
        joints.offer(names, [float(k)] * len(names), T0 + k * 10 * MS, T0 + k * 10 * MS)
    assert joints.state_at(T0 + 35 * MS)[0] == 3.0
    assert joints.state_at(T0 - 5 * MS)[0] == 0.0  # all newer: the oldest kept one
    assert joints.state_at(T0 + 10 * S) is None  # beyond joints.max_age: no pairing


# -- InstructionGate ---------------------------------------------------------------------------------

def test_the_instruction_gate_default_stop_bounds_unknown_and_caching() -> None:
    source = StubInstructions(encoding=("being encoded",))
    gate = InstructionGate(KNOWN, "/instruction", source)
    assert gate.status() == (True, "")
    asked = len(source.asked)
    gate.status()
    assert len(source.asked) == asked  # cached per text
    assert gate.receive("") == ("info", "empty instruction: holding until the next one")
    assert gate.status() == (False, "") and gate.current == ""  # "stop" does not bring the default back
    level, why = gate.receive("x" * (MAX_INSTRUCTION_CHARS + 1))
    assert level == "error" and "/instruction" in why and len(why) < 1000
    level, why = gate.receive("do a backflip")
    assert level == "error" and "backflip" in why
    assert gate.receive("being encoded") == ("", "")
    gate.status()
    gate.status()
    assert source.asked.count("being encoded") == 3  # not final: asked again every time


def test_throttled_logger_says_a_repeated_message_once_per_period() -> None:
    import logging

    now = [0.0]
    records: list[str] = []

    class Handler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    logger = logging.getLogger("lightwam_ros.test_throttle")
    logger.addHandler(Handler())
    log = ThrottledLogger(logger, monotonic=lambda: now[0])
    for _ in range(5):
        log.error("bad frame", throttle_duration_sec=2.0)
    now[0] = 2.5
    log.error("bad frame", throttle_duration_sec=2.0)
    log.error("bad frame")  # unthrottled
    assert records == ["bad frame"] * 3


@pytest.mark.parametrize("module", ["lightwam_ros.control.controller", "lightwam_ros.control.joint_input",
                                    "lightwam_ros.control.instruction"])
def test_control_imports_neither_torch_nor_rclpy(module: str) -> None:
    code = f"import sys, {module}; print(sorted(m for m in ('torch', 'rclpy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"
