"""Property-based tests of the control path: random event sequences on the real PolicyNode.

Harness: test/support/control_sim.py (the node's own callbacks on a simulated clock, a robot that executes
every command, a synthetic policy whose chunks can be delayed, reordered or corrupted). Hypothesis
draws sequences of segments -- camera faults, joint-state faults, chunk faults and latencies, and
one operation per segment (pause/resume, dry_run, lifecycle, instructions, parameter updates,
clock jumps, the robot moved by hand, oversized messages) -- and every message on the output
topic is checked against the invariants listed in control_sim.Episode, at every tick.

Why properties and not only scripted faults: the holes they guard against (a jump after a silent
hold, a hold that keeps a delta controller moving, NaN reaching the robot) appear only for some
orders of events; the regression tests at the end are the shrunk counterexamples, one per hole.

CI runs a fixed, derandomized set of examples without the shrink phase (bounded time);
LIGHTWAM_PROPERTY_EXAMPLES=<n> runs n random examples per property (release check), and
LIGHTWAM_PROPERTY_SHRINK=1 shrinks a failure to a minimal sequence.
"""

from __future__ import annotations

import os

import pytest
from control_sim import (
    CAMERA_MODES,
    CHUNK_MODES,
    JOINT_MODES,
    LATENCIES_MS,
    OPS,
    PARAM_CHOICES,
    UNKNOWN_INSTRUCTION,
    ControlSim,
    Profile,
    Step,
)
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from lightwam_ros.demo.tiny_bundle import DEMO_INSTRUCTIONS

_RELEASE = int(os.environ.get("LIGHTWAM_PROPERTY_EXAMPLES", "0") or 0)
_SHRINK = os.environ.get("LIGHTWAM_PROPERTY_SHRINK", "") not in ("", "0")
_PHASES = [Phase.explicit, Phase.reuse, Phase.generate] + ([Phase.shrink] if _SHRINK or _RELEASE else [])
PROPERTY_SETTINGS = settings(
    max_examples=_RELEASE or 6, derandomize=not _RELEASE, deadline=None, database=None, phases=_PHASES,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
    print_blob=True)
INSTRUCTIONS = (*list(DEMO_INSTRUCTIONS)[:2], "", UNKNOWN_INSTRUCTION)


@st.composite
def steps(draw: st.DrawFn) -> Step:
    op = draw(st.sampled_from(OPS))
    arg = None
    if op == "instruction":
        arg = draw(st.sampled_from(INSTRUCTIONS))
    elif op == "param":
        arg = draw(st.sampled_from(PARAM_CHOICES))
    elif op in ("jump_back", "jump_fwd"):
        arg = draw(st.sampled_from((0.5, 3.0, 30.0)))
    return Step(ticks=draw(st.integers(1, 25)), op=op, arg=arg, cams=draw(st.sampled_from(CAMERA_MODES)),
                joints=draw(st.sampled_from(JOINT_MODES)), chunks=draw(st.sampled_from(CHUNK_MODES)),
                latency_ms=draw(st.sampled_from(LATENCIES_MS)))


# A warm-up segment first (chunks flowing, the robot following), then the random part.
sequences = st.lists(steps(), min_size=1, max_size=12).map(lambda s: [Step(ticks=30), *s])


@pytest.fixture(scope="module")
def control(tiny_bundle):
    cs = ControlSim(tiny_bundle, name="lw_props")
    yield cs
    cs.close()


def _run(control: ControlSim, profile: Profile, seq: list[Step], seed: int = 0) -> None:
    control.episode(profile).run(seq, seed)




@PROPERTY_SETTINGS
@given(seq=sequences, seed=st.integers(0, 2**16), workers=st.sampled_from((1, 2)))
def test_forward_position_invariants(control, seq, seed, workers) -> None:
    _run(control, Profile(mode="forward", workers=workers), seq, seed)


@PROPERTY_SETTINGS
@given(seq=sequences, seed=st.integers(0, 2**16), workers=st.sampled_from((1, 2)))
def test_joint_trajectory_invariants(control, seq, seed, workers) -> None:
    _run(control, Profile(mode="joint_trajectory", workers=workers), seq, seed)


@PROPERTY_SETTINGS
@given(seq=sequences, seed=st.integers(0, 2**16))
def test_delta_action_invariants(control, seq, seed) -> None:
    _run(control, Profile(mode="forward", delta=True), seq, seed)


@PROPERTY_SETTINGS
@given(seq=sequences, seed=st.integers(0, 2**16))
def test_measured_joint_outside_state_invariants(control, seq, seed) -> None:
    _run(control, Profile(mode="forward", aux_joint=True), seq, seed)


# ---------------------------------------------------------------------------------------------
# Shrunk counterexamples, one per hole (issue 9), as plain readable sequences.
# ---------------------------------------------------------------------------------------------

WARM = Step(ticks=30)  # chunks flowing, the robot following


def _episode(control: ControlSim, profile: Profile, seq: list[Step], seed: int = 0):
    ep = control.episode(profile)
    ep.run(seq, seed)
    return ep


def test_first_command_after_dry_run_starts_from_the_moved_robot(control) -> None:
    _episode(control, Profile(mode="forward"), [
        WARM, Step(ticks=3, op="dry_run_on"), Step(ticks=3, op="move"), Step(ticks=30, op="dry_run_off")], seed=1)


def test_first_trajectory_after_a_silent_hold_starts_from_the_moved_robot(control) -> None:
    _episode(control, Profile(mode="joint_trajectory"), [
        WARM, Step(ticks=3, op="pause"), Step(ticks=3, op="move"), Step(ticks=30, op="resume")], seed=1)


def test_first_trajectory_point_is_within_max_step_of_the_measured_position(control) -> None:
    _episode(control, Profile(mode="joint_trajectory"), [Step(ticks=30)])


def test_a_hold_publishes_nothing_for_delta_actions(control) -> None:
    _episode(control, Profile(mode="forward", delta=True), [WARM, Step(ticks=3, op="pause")])


def test_deactivate_publishes_nothing_for_delta_actions(control) -> None:
    _episode(control, Profile(mode="forward", delta=True), [WARM, Step(ticks=1, op="deactivate")])


def test_nan_measured_joint_is_never_commanded(control) -> None:
    _episode(control, Profile(mode="forward", aux_joint=True), [
        WARM, Step(ticks=1, op="deactivate"), Step(ticks=20, op="activate", joints="nan_measured")])


def test_dry_run_never_publishes_even_while_paused(control) -> None:
    _episode(control, Profile(mode="forward"), [WARM, Step(ticks=2, op="dry_run_on"), Step(ticks=3, op="pause")])


def test_backwards_clock_jump_recovers(control) -> None:
    ep = _episode(control, Profile(mode="forward"), [WARM, Step(ticks=100, op="jump_back", arg=30.0)])
    assert ep.controller.hold is None, f"still holding ({ep.controller.hold}) 2 s after the clock jumped back"
    # the plan follows chunks of observations made after the jump, not a plan stamped in the future
    assert ep.controller.scheduler.stamp_ns <= ep.clock.now_ns, "the plan in flight is stamped in the future"


def test_future_stamped_joint_state_does_not_keep_the_state_fresh(control) -> None:
    from lightwam_ros.control.safety import HoldReason

    ep = _episode(control, Profile(mode="forward"), [
        WARM, Step(ticks=1, joints="future"), Step(ticks=20, joints="silent")])
    hold = ep.controller.hold
    assert hold is HoldReason.STALE_STATE, f"hold is {hold} 0.4 s after the last joint state"


def test_huge_joint_state_is_rejected_quickly(control) -> None:
    _episode(control, Profile(mode="forward"), [WARM, Step(ticks=5, op="huge_names")])


def test_joint_name_index_cache_is_bounded(control) -> None:
    _episode(control, Profile(mode="forward"), [WARM, Step(ticks=5, op="many_name_lists")])


def test_huge_instruction_is_cheap(control) -> None:
    _episode(control, Profile(mode="forward"), [WARM, Step(ticks=10, op="huge_instruction")])


def test_duplicate_joint_name_is_not_taken_as_the_measured_position(control) -> None:
    _episode(control, Profile(mode="forward"), [
        WARM, Step(ticks=1, joints="dup_name"), Step(ticks=1, op="deactivate"),
        Step(ticks=5, op="activate", joints="nan_state")])
