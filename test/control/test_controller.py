"""PolicyController and its parts driven as plain Python: no DDS, no rclpy, no torch, no model.

The controller is given a stub pool whose chunks are a known function of the observation time, a
stub instruction source and a simulated clock; every decision (pairing, gating, holding, merging,
clock jumps) is checked from the commands it returns. The simulated-clock fault and property tests
drive the same controller behind the ROS bridge with the real model; these pin the decisions
themselves, fast enough for `make test-unit`.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from typing import Any, NamedTuple

import numpy as np
import pytest

from lightwam_ros import config as cfgmod
from lightwam_ros.config import MAX_INSTRUCTION_CHARS, MAX_JOINT_NAMES
from lightwam_ros.control.controller import (
    REPEAT_LOG_PERIOD_S,
    Clocks,
    ForwardCommand,
    ModelInfo,
    PolicyController,
    Topics,
    TrajectoryCommand,
)
from lightwam_ros.control.diagnostics import Level
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

    def __init__(self, clock: Clock, latency_ns: int = 40 * MS, dims: int = 14, nan: bool = False,
                 fail: bool = False) -> None:
        self.clock, self.latency_ns, self.dims, self.nan, self.fail = clock, latency_ns, dims, nan, fail
        self.pending: list[Result] = []
        self.requests: list[FrameSet] = []

    workers = 1

    @property
    def busy(self) -> bool:
        return len(self.pending) >= 1

    def submit(self, ticket: Any, request: FrameSet) -> bool:
        self.requests.append(request)
        if self.fail:  # the pipeline raised: no chunk, the error by name
            self.pending.append(Result(ticket, request, None, f"boom {len(self.requests)}",
                                       self.clock.now + self.latency_ns))
            return True
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
    """Every call, throttled or not; ``at`` keeps the clock time of each record when given a clock."""

    def __init__(self, clock: Clock | None = None) -> None:
        self.records: list[tuple[str, str]] = []
        self.at: list[int] = []
        self.clock = clock

    def __getattr__(self, level: str) -> Any:
        def log(msg: str, **kw: Any) -> None:
            self.records.append((level, msg))
            self.at.append(self.clock.now if self.clock else 0)
        return log

    def lines(self, level: str, prefix: str) -> list[tuple[int, str]]:
        return [(t, m) for t, (lv, m) in zip(self.at, self.records) if lv == level and m.startswith(prefix)]


class Rig:
    """A controller on the demo profile (forward output unless changed) with a moving clock."""

    def __init__(self, pool_kw: dict | None = None, **changes: Any) -> None:
        changes = {"output__mode": "forward", "instruction__default": KNOWN, **changes}
        self.config = demo_config(**changes)
        self.clock = Clock()
        self.pool = StubPool(self.clock, **(pool_kw or {}))
        self.logs = Logs(self.clock)
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


# -- a persistently bad model: counted logs, back-off, escalation, recovery -------------------------

REFUSAL_LINE = re.compile(r"^chunk refused \(x(\d+) in the last (\d+\.\d) s\): ")
CHUNK_PERIOD = TRAINED_STEPS * 20 * MS  # the usable steps of a chunk x dt: the first back-off


def control_status(rig: Rig) -> dict[str, Any]:
    statuses, _ = rig.controller.diagnostics()
    (control,) = [st for st in statuses if st["name"].endswith(": control")]
    return control


def request_times(rig: Rig) -> np.ndarray:
    """When each request was made (its frame set is stamped at the tick it completed on)."""
    return np.array([r.stamp_ns for r in rig.pool.requests], dtype=np.int64)


def refused_count(results: list[Any]) -> int:
    return sum(c.outcome is ChunkOutcome.REFUSED for r in results for c in r.chunks)


def step_until(rig: Rig, done: Any, limit: int = 5000) -> list[Any]:
    out = []
    for _ in range(limit):
        out += rig.step()
        if done():
            return out
    raise AssertionError("condition not reached")


def test_repeated_refusals_log_at_most_one_line_per_period_with_the_count() -> None:
    rig = Rig(pool_kw={"nan": True}, chunk__refusal_backoff_max=0.0)  # refused as fast as the model runs
    rig.controller.activate()
    results = rig.step(3500)  # 70 s: ~1100 refused chunks
    lines = rig.logs.lines("error", "chunk refused")
    assert len(lines) == 3, lines
    times = [t for t, _ in lines]
    assert all(b - a >= REPEAT_LOG_PERIOD_S * S for a, b in zip(times, times[1:]))
    assert lines[0][1] == f"chunk refused: {rig.controller.refusals.reason}; holding"  # the first: at once
    counts = []
    for _, line in lines[1:]:
        m = REFUSAL_LINE.match(line)
        assert m and float(m.group(2)) == pytest.approx(REPEAT_LOG_PERIOD_S, abs=0.1), line
        assert "non-finite" in line and line.endswith("; holding")
        counts.append(int(m.group(1)))
    assert all(c > 100 for c in counts)
    refused = refused_count(results)
    assert 1 + sum(counts) <= refused < 1 + sum(counts) + REPEAT_LOG_PERIOD_S * S / (40 * MS)
    assert refused > 1000


def test_repeated_inference_failures_log_at_most_one_line_per_period_with_the_count() -> None:
    rig = Rig(pool_kw={"fail": True})
    rig.controller.activate()
    results = rig.step(3500)
    lines = rig.logs.lines("error", "inference failed")
    assert len(lines) == 3 and lines[0][1] == "inference failed: boom 1; holding"
    assert all(b - a >= REPEAT_LOG_PERIOD_S * S for a, b in zip([t for t, _ in lines], [t for t, _ in lines][1:]))
    assert all(re.match(r"^inference failed \(x\d{3,} in the last 30\.\d s\): boom \d+; holding$", m)
               for _, m in lines[1:])
    assert all(r.hold is not None for r in results)
    assert control_status(rig)["values"]["inference_failures.consecutive"] == len(rig.pool.requests) - len(
        rig.pool.pending)


def test_requests_back_off_doubling_from_one_chunk_period_to_the_max_and_the_robot_holds() -> None:
    rig = Rig(pool_kw={"nan": True})  # chunk.refusal_backoff_max: 5 s (the default)
    rig.controller.activate()
    results = rig.step(2000)  # 40 s
    gaps = np.diff(request_times(rig))
    latency = rig.pool.latency_ns
    waits = [0] + [min(5 * S, CHUNK_PERIOD << k) for k in range(len(gaps) - 1)]  # after refusal 1, 2, ...
    assert len(gaps) >= 8
    for gap, wait in zip(gaps, waits):  # a request goes out on the first frame set after the wait
        assert latency + wait <= gap < latency + wait + 3 * 20 * MS, (gaps, waits)
    assert len(rig.pool.requests) < 20  # vs ~650 at every chance without the back-off (2000 ticks)
    first = next(i for i, r in enumerate(results) if r.chunks)
    assert all(r.hold is HoldReason.CHUNK_REFUSED for r in results[first:])
    assert all(isinstance(r.command, ForwardCommand) for r in results)
    np.testing.assert_array_equal(np.stack([r.command.values for r in results]), np.tile(rig.q, (len(results), 1)))
    values = control_status(rig)["values"]
    assert 0 < values["refusals.next_request_in_s"] <= 5.0
    assert values["refusals.consecutive"] == len(rig.pool.requests) - len(rig.pool.pending)
    line = rig.logs.lines("error", "chunk refused")[-1][1]
    assert "next inference request in" in line and "refused in a row" in line


def test_back_off_zero_asks_again_at_every_chance() -> None:
    rig = Rig(pool_kw={"nan": True}, chunk__refusal_backoff_max=0.0)
    rig.controller.activate()
    rig.step(500)
    gaps = np.diff(request_times(rig))
    assert np.all(gaps <= rig.pool.latency_ns + 20 * MS) and len(rig.pool.requests) >= 500 // 3
    assert "refusals.next_request_in_s" not in control_status(rig)["values"]


def test_diagnostics_escalate_to_error_after_n_refusals_in_a_row() -> None:
    rig = Rig(pool_kw={"nan": True})  # chunk.refusal_error_count: 3 (the default)
    rig.controller.activate()
    ctl = rig.controller
    step_until(rig, lambda: ctl.refusals.consecutive == 1)
    status = control_status(rig)
    assert status["level"] is Level.WARN and status["message"] == "holding: chunk_refused"
    assert status["values"]["refusals.consecutive"] == 1
    step_until(rig, lambda: ctl.refusals.consecutive == 2)
    assert control_status(rig)["level"] is Level.WARN
    step_until(rig, lambda: ctl.refusals.consecutive == 3)
    status = control_status(rig)
    assert status["level"] is Level.ERROR and status["values"]["refusals.consecutive"] == 3
    msg = status["message"]
    assert msg.startswith("holding: chunk_refused; model output persistently refused: 3 chunks in a row")
    assert "non-finite" in msg and "safety.position_min/max" in msg and "normalization" in msg
    rig.controller.pause()  # an intentional hold does not hide it: the model is still the one refused
    rig.step(1)
    assert control_status(rig)["level"] is Level.ERROR
    rig.controller.deactivate()  # an inactive node reports no fault
    assert control_status(rig)["level"] is Level.OK

    strict = Rig(pool_kw={"nan": True}, chunk__refusal_error_count=1)
    strict.controller.activate()
    step_until(strict, lambda: strict.controller.refusals.consecutive == 1)
    assert control_status(strict)["level"] is Level.ERROR


def test_an_accepted_chunk_ends_the_back_off_count_and_error_at_once() -> None:
    rig = Rig(pool_kw={"nan": True})
    rig.controller.activate()
    ctl = rig.controller
    step_until(rig, lambda: ctl.refusals.consecutive == 5)
    assert control_status(rig)["level"] is Level.ERROR
    rig.pool.nan = False  # the model's output is fine again (e.g. inputs back to normal)
    results = step_until(rig, lambda: rig.controller.hold is None)
    assert [c.outcome for r in results for c in r.chunks] == [ChunkOutcome.ACCEPTED]
    status = control_status(rig)
    assert status["level"] is Level.OK and status["message"] == "following the policy"
    assert status["values"]["refusals.consecutive"] == 0 and "refusals.next_request_in_s" not in status["values"]
    assert rig.logs.records[-1] == ("info", "chunk accepted after 5 refused in a row; following the policy again")
    rig.step(100)
    assert ctl.hold is None
    rig.pool.nan = True  # a new refusal starts from scratch: the first one is retried at once
    n = len(rig.pool.requests)
    step_until(rig, lambda: ctl.refusals.consecutive == 1)
    step_until(rig, lambda: len(rig.pool.requests) > n + 1, limit=3)
    assert control_status(rig)["level"] is Level.WARN


@pytest.mark.parametrize("restart", ["resume", "activate", "clock_reset", "new_limits"])
def test_the_back_off_never_delays_the_first_request_after_a_restart(restart: str) -> None:
    rig = Rig(pool_kw={"nan": True})
    rig.controller.activate()
    ctl = rig.controller
    step_until(rig, lambda: ctl.refusals.consecutive == 7)  # the next request is 5 s away
    rig.step(5)
    assert control_status(rig)["values"]["refusals.next_request_in_s"] > 4.0
    n = len(rig.pool.requests)
    if restart == "resume":
        ctl.pause()
        rig.step(1)
        ctl.resume()
    elif restart == "activate":
        ctl.deactivate()
        ctl.activate()
    elif restart == "clock_reset":
        rig.clock.now -= 5 * S
    else:  # a runtime change of the limits may be the fix: the next frame set shows it
        ctl.reconfigure(dataclasses.replace(ctl.config, safety=dataclasses.replace(ctl.config.safety,
                                                                                   refuse_margin=0.5)))
    results = rig.step(4)
    assert len(rig.pool.requests) == n + 1
    assert all(r.hold is not None for r in results)


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


# -- JointTrajectory output: velocities across handovers, the start stamp ----------------------------

class TimedPool(StubPool):
    """Chunks that are samples of one smooth motion of time, f(t) = centre + amplitude *
    sin(2 pi t / period) per dim, whatever the observation: every chunk agrees with the plan in flight, so
    what changes at a handover is only what the node does with it (stamps and steps lie on the 20 ms
    grid, so every merged plan is f on that grid exactly)."""

    def __init__(self, clock: Clock, centre: np.ndarray, amplitude: np.ndarray, period_s: float = 2.0) -> None:
        super().__init__(clock, dims=len(centre))
        self.centre, self.amplitude, self.omega = centre, amplitude, 2 * np.pi / period_s

    def f(self, t_ns: np.ndarray | int) -> np.ndarray:
        t = (np.asarray(t_ns, dtype=np.int64) - T0)[..., None] / S
        return self.centre + self.amplitude * np.sin(self.omega * t)

    def submit(self, ticket: Any, request: FrameSet) -> bool:
        self.requests.append(request)
        actions = self.f(request.stamp_ns + 20 * MS * np.arange(32)).astype(np.float32)
        chunk = ActionChunk(actions=actions, stamp_ns=request.stamp_ns, dt_ns=20 * MS, trained_steps=TRAINED_STEPS)
        self.pending.append(Result(ticket, request, chunk, None, self.clock.now + self.latency_ns))
        return True


def timed_rig(amplitude: float, **changes: Any) -> tuple[Rig, TimedPool]:
    """A joint-trajectory rig with velocities following a TimedPool motion about the middle of the
    limits, ``amplitude`` a fraction of each dim's half range (the robot is measured at f(T0))."""
    rig = Rig(output__mode="joint_trajectory", output__send_velocities=True, **changes)
    lo, hi = np.asarray(rig.config.safety.position_min), np.asarray(rig.config.safety.position_max)
    rig.q = (lo + hi) / 2
    pool = TimedPool(rig.clock, rig.q, amplitude * (hi - lo) / 2)
    rig.pool = rig.controller.pool = pool
    rig.controller.activate()
    return rig, pool


def trajectories(rig: Rig, ticks: int) -> list[tuple[int, TrajectoryCommand, np.ndarray]]:
    """Run ``ticks`` periods; (tick time, command, the tick's command the trajectory starts from) of
    every multi-point trajectory published."""
    out = []
    for _ in range(ticks):
        (r,) = rig.step()
        if isinstance(r.command, TrajectoryCommand) and len(r.command.points) > 1:
            out.append((rig.clock.now, r.command, rig.controller.safety.last_commanded))
    return out


def test_trajectory_velocities_continue_the_motion_the_jtc_executes_at_each_handover() -> None:
    """The first point's velocity of each new trajectory equals the velocity the trajectory it
    replaces has at the same instant: central differences from where the trajectory starts (the
    tick's command), the same formula the previous trajectory used there. A one-sided difference
    at the first point -- the velocity half a step later -- would not: the motion accelerates.
    (latency_margin 3: the next chunk merges with ~8 steps of the old one left, so both trajectories
    have points at the same instants; with the default the handover is at the old one's last step.)"""
    rig, pool = timed_rig(amplitude=0.1, chunk__latency_margin=3.0)
    sent = trajectories(rig, 300)
    assert len(sent) >= 8
    dt = 20 * MS
    dt_s = dt / S
    for k, (t, c, start) in enumerate(sent):  # central differences over (start, points), the last 0
        assert c.stamp_ns == 0 and c.dt_ns == dt  # start on arrival
        if k:  # (the first starts where the robot was measured and catches up with the plan at the cap)
            np.testing.assert_allclose(c.points, pool.f(t + dt * np.arange(1, len(c.points) + 1)), atol=1e-6)
            np.testing.assert_allclose(start, pool.f(t), atol=1e-6)
        np.testing.assert_array_equal(c.velocities[-1], 0.0)
        seq = np.vstack([start[None], c.points])
        np.testing.assert_allclose(c.velocities[:-1], (seq[2:] - seq[:-2]) / (2 * dt_s), atol=1e-12)
    checked = 0
    for (t1, a, _), (t2, b, _) in zip(sent, sent[1:]):
        j = (t2 - t1) // dt  # a's point at the time of b's first point (t2 + dt)
        assert j + 1 < len(a.points)  # not a's last point (velocity 0 by design)
        np.testing.assert_allclose(b.velocities[0], a.velocities[j], atol=1e-9)
        one_sided = (b.points[1] - b.points[0]) / dt_s
        assert np.abs(one_sided - a.velocities[j]).max() > 1e-4  # the old scheme's error, seen here
        checked += 1
    assert checked >= 7


class ReversingPool(StubPool):
    """Each chunk runs from the controller's last command at 0.4 max_step per step, the direction
    reversing from one chunk to the next: a plan that changes its mind at every merge."""

    def __init__(self, rig: Rig) -> None:
        super().__init__(rig.clock)
        self.rig = rig

    def submit(self, ticket: Any, request: FrameSet) -> bool:
        self.requests.append(request)
        ctl, safety = self.rig.controller, self.rig.config.safety
        base = ctl.safety.last_commanded if ctl.safety.last_commanded is not None else np.asarray(request.state)
        sign = 1.0 if len(self.requests) % 2 else -1.0
        ramp = sign * 0.4 * np.asarray(safety.max_step)[None] * np.arange(32)[:, None]
        actions = np.clip(base[None] + ramp, np.asarray(safety.position_min) + 0.05,
                          np.asarray(safety.position_max) - 0.05)
        chunk = ActionChunk(actions=actions.astype(np.float32), stamp_ns=request.stamp_ns, dt_ns=20 * MS,
                            trained_steps=TRAINED_STEPS)
        self.pending.append(Result(ticket, request, chunk, None, self.clock.now + self.latency_ns))
        return True


@pytest.mark.parametrize("velocities", [False, True])
def test_a_new_plan_starts_from_where_the_jtc_is_on_the_last_trajectory(velocities: bool) -> None:
    """replace merges of chunks that reverse: the tick that merges a new plan would step toward it,
    but the JTC never receives that step -- it is on the trajectory it was sent. The new trajectory
    starts from there (the tick's command is that position) and its first point is within
    max_step of it; capped from the stepped command it was 2.4 steps away, the other way."""
    rig = Rig(output__mode="joint_trajectory", output__send_velocities=velocities, chunk__merge="replace",
              chunk__latency_margin=3.0)
    rig.pool = rig.controller.pool = ReversingPool(rig)
    rig.controller.activate()
    sent = trajectories(rig, 300)
    assert len(sent) >= 8
    cap = np.asarray(rig.config.safety.max_step)
    for (t1, a, start1), (t2, b, start2) in zip(sent, sent[1:]):
        times = np.concatenate(([t1], t1 + a.dt_ns * np.arange(1, len(a.points) + 1)))
        knots = np.vstack([start1[None], a.points])
        jtc = np.array([np.interp(t2, times, knots[:, d]) for d in range(knots.shape[1])])  # ticks on points
        np.testing.assert_allclose(start2, jtc, atol=1e-12)
        assert np.all(np.abs(b.points[0] - jtc) <= cap + 1e-12)
        assert np.any(np.sign(b.points[1] - b.points[0]) != np.sign(a.points[1] - a.points[0]))  # reversed
        if velocities:  # the first velocity is the central difference from there
            np.testing.assert_allclose(b.velocities[0], (b.points[1] - jtc) / (2 * b.dt_ns / S), atol=1e-9)


def test_trajectory_velocities_obey_the_rate_cap_and_match_the_limited_points() -> None:
    """A motion far faster than safety.max_step allows: the points are capped, and the velocities
    are those of the capped points (within max_step per control period), not of the plan."""
    rig, pool = timed_rig(amplitude=0.9)
    pool.omega = 2 * np.pi / 0.5  # 35 rad/s peak vs a 2.5 rad/s cap
    results = rig.step(200)
    sent = [r.command for r in results if isinstance(r.command, TrajectoryCommand) and len(r.command.points) > 1]
    assert sent
    period_s = rig.config.control_period_ns / S
    speed_cap = np.asarray(rig.config.safety.max_step) / period_s
    capped = 0
    for c in sent:
        dt_s = c.dt_ns / S
        assert np.all(np.abs(np.diff(c.points, axis=0)) <= np.asarray(rig.config.safety.max_step) + 1e-12)
        assert np.all(np.abs(c.velocities) <= speed_cap + 1e-9)
        np.testing.assert_allclose(c.velocities[1:-1], (c.points[2:] - c.points[:-2]) / (2 * dt_s), atol=1e-9)
        capped += int(np.any(np.isclose(np.abs(c.velocities), speed_cap)))
    assert capped  # the cap was reached: the bound above is not vacuous


def test_a_start_delay_stamps_the_trajectory_ahead_on_the_node_clock_with_the_plan_from_then_on() -> None:
    """(A delay of whole steps keeps the samples on the plan's knots, where the plan is f exactly.)"""
    rig, pool = timed_rig(amplitude=0.1, output__trajectory_start_delay=0.06)
    assert rig.controller.config.output.trajectory_start_delay_ns == 60 * MS
    sent = trajectories(rig, 200)[1:]  # (the first catches up with the plan from the measured position)
    assert len(sent) >= 4
    dt = 20 * MS
    for t, c, _ in sent:
        assert c.stamp_ns == t + 60 * MS  # node clock now + delay
        times = c.stamp_ns + dt * np.arange(1, len(c.points) + 1)  # time_from_start relative to the stamp
        np.testing.assert_allclose(c.points, pool.f(times), atol=1e-6)
        v0 = (c.points[1] - pool.f(c.stamp_ns)) / (2 * dt / S)  # from the plan at the start
        np.testing.assert_allclose(c.velocities[0], v0, atol=1e-6)
    # a hold is never delayed: it must take over at once
    rig.cameras_on = False
    held = [r.command for r in rig.step(40)
            if isinstance(r.command, TrajectoryCommand) and len(r.command.points) == 1]
    assert len(held) == 1 and held[0].stamp_ns == 0 and held[0].velocities is None
    # a runtime change back to 0: start on arrival again
    rig.cameras_on = True
    rig.controller.reconfigure(dataclasses.replace(rig.controller.config, output=dataclasses.replace(
        rig.controller.config.output, trajectory_start_delay_ns=0)))
    again = trajectories(rig, 100)
    assert again and all(c.stamp_ns == 0 for _, c, _ in again)


def test_a_start_delay_makes_requests_that_much_earlier() -> None:
    """A trajectory stamped 200 ms ahead takes over from the one the JTC is executing only then, so
    the new chunk must come while the old trajectory still reaches 200 ms past the tick: the
    scheduler's lead grows by the delay. Checked on what the JTC gets: each trajectory starts
    before the previous one's last point (no gap in which the JTC has finished and stands still).
    Before the lead counted the delay (60 ms for a 40 ms inference), every handover left such a gap."""
    rig, _ = timed_rig(amplitude=0.1, output__trajectory_start_delay=0.2)
    assert rig.controller.scheduler.start_delay_ns == 200 * MS
    assert rig.controller.scheduler.lead_ns(40 * MS) >= 260 * MS
    sent = [c for _, c, _ in trajectories(rig, 400)][1:]  # (the first starts from the measured position)
    assert len(sent) >= 6
    dt = 20 * MS
    for before, after in zip(sent, sent[1:]):
        assert after.stamp_ns <= before.stamp_ns + dt * len(before.points), \
            (after.stamp_ns - before.stamp_ns) / MS
    # switched off at run time: the lead drops back
    rig.controller.reconfigure(dataclasses.replace(rig.controller.config, output=dataclasses.replace(
        rig.controller.config.output, trajectory_start_delay_ns=0)))
    assert rig.controller.scheduler.start_delay_ns == 0


def test_a_start_delay_caps_the_first_point_over_the_delay_and_one_step() -> None:
    """The first point is (delay + dt) after the command it is capped from: the cap scales with it,
    and the velocities stay within the cap."""
    rig, pool = timed_rig(amplitude=0.9, output__trajectory_start_delay=0.1)
    pool.omega = 2 * np.pi / 0.5
    sent = trajectories(rig, 200)
    assert len(sent) >= 4
    cap = np.asarray(rig.config.safety.max_step)
    reached = 0
    for _, c, start in sent:  # start: this tick's command, the trajectory's reference
        gap = np.abs(c.points[0] - start)
        assert np.all(gap <= cap * (100 + 20) / 20 + 1e-12)
        reached += int(np.any(gap > cap * 2))  # more than one step's cap: the delay's share is used
        assert np.all(np.abs(c.velocities) <= cap / (rig.config.control_period_ns / S) + 1e-9)
    assert reached


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
