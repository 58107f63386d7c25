"""The control path's safety rules, one regression test per hole found by review (each failed on
the code before the fix): what is published after a silent period, holds for delta actions,
non-finite and future joint states, dry run, clocks running backwards, refused chunks that arrive
stale, and input that would stall the control thread or grow memory.

Most tests drive the real PolicyNode on the simulated clock (test/support/fault_sim.py); the scheduler,
synchronizer and config rules are tested as plain code.
"""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest
import rclpy
from fault_sim import START_NS, TICK_NS, command_of, configure_only, max_steps
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from sensor_msgs.msg import JointState

from lightwam_ros import config as C
from lightwam_ros.config import ChunkConfig, ConfigError, SafetyConfig, SyncConfig
from lightwam_ros.control import sync as S
from lightwam_ros.control.joint_input import JOINT_INDEX_CACHE
from lightwam_ros.control.safety import HoldReason, SafetyFilter
from lightwam_ros.control.scheduler import ChunkOutcome, ChunkScheduler, TickStatus
from lightwam_ros.demo.synthetic import joint_positions
from lightwam_ros.ros.images import ns_to_time
from lightwam_ros.types import ActionChunk

SEC = 1_000_000_000
INSTRUCTION = "pick up the red block"  # cached in the demo bundle


def _moved_joint_hook(sim, offset: float, extra: dict[str, float] | None = None):
    """Joint states of a robot that someone else moved: start pose + offset (and extra joints)."""
    names = list(sim.params["joints.names"])
    pose = joint_positions(0.0, len(names)) + offset

    def hook(t_ns: int) -> JointState:
        msg = JointState()
        msg.header.stamp = ns_to_time(t_ns)
        msg.name = names + list((extra or {}).keys())
        msg.position = pose.tolist() + list((extra or {}).values())
        return msg
    return hook, pose


def _published_after(sim, t_ns: int):
    return [(t, m) for t, m in sim.output.messages if t >= t_ns]


# -- 1. the first command after a silent period -------------------------------------------------

def test_first_command_after_waiting_for_an_instruction_starts_at_the_measured_position(sim_factory):
    """While the node waits for an instruction nothing is published to a trajectory controller and
    a planner moves the robot 0.3 rad; the first trajectory must start within max_step of where
    the robot is, not of where it was when the node started. (In forward mode a hold publishes
    the held position every tick, so nobody else can move the robot: no silence to recover from.)"""
    sim = sim_factory(name="lw_s_wait", instruction__default="", output__mode="joint_trajectory")
    sim.run(0.5)
    hook, pose = _moved_joint_hook(sim, 0.3)
    sim.joint_hook = hook
    sim.run(0.3)
    assert not sim.output.messages, "waiting for an instruction publishes nothing to a trajectory controller"
    t0 = sim.clock.now_ns
    sim.send_instruction(INSTRUCTION)
    sim.run(1.0)
    first = _published_after(sim, t0)
    assert first, "the node follows once the instruction arrives"
    cmd = command_of(first[0][1])
    assert np.all(np.abs(cmd - pose) <= max_steps(sim.params) + 1e-9), cmd - pose


def test_switching_dry_run_off_starts_from_the_measured_position(sim_factory):
    sim = sim_factory(name="lw_s_dry_off", dry_run=True, output__mode="joint_trajectory")
    sim.run(0.5)
    hook, pose = _moved_joint_hook(sim, -0.25)  # a teleoperator moves the robot during the dry run
    sim.joint_hook = hook
    sim.run(0.5)
    assert not sim.output.messages
    t0 = sim.clock.now_ns
    assert sim.set_parameters(dry_run=False)[0]
    sim.run(0.5)
    first = _published_after(sim, t0)
    assert first
    traj = first[0][1]
    p0 = np.asarray(traj.points[0].positions)
    assert np.all(np.abs(p0 - pose) <= max_steps(sim.params) + 1e-9)


# -- 2. holds never move a delta-action robot ------------------------------------------------------

def _delta_sim(sim_factory, name, **kw):
    n = 14
    return sim_factory(name=name, output__action_space="delta", output__joint_names=[f"d{i}" for i in range(n)],
                       safety__position_min=[-1.0] * n, safety__position_max=[1.0] * n,
                       safety__max_step=[0.5] * n, chunk__merge="replace", **kw)


def test_a_hold_publishes_nothing_for_delta_actions(sim_factory):
    sim = _delta_sim(sim_factory, "lw_s_delta")
    sim.run(1.0)
    assert sim.ticks[-1].hold is None and sim.output.messages
    t_drop = sim.clock.now_ns
    sim.silent_cameras = set(sim.cameras)
    sim.run(2.0)
    holding = [tk for tk in sim.ticks if tk.t_ns >= t_drop and tk.hold is not None]
    assert holding and all(tk.hold is HoldReason.STALE_CAMERAS for tk in holding[-10:])
    first_hold = holding[0].t_ns
    assert not _published_after(sim, first_hold), "a delta hold must not resend the last delta"


def test_a_delta_hold_publishes_the_configured_neutral_command(sim_factory):
    neutral = [0.0] * 13 + [0.5]
    sim = _delta_sim(sim_factory, "lw_s_delta_neutral", output__hold_command=neutral)
    sim.run(1.0)
    t_drop = sim.clock.now_ns
    sim.silent_cameras = set(sim.cameras)
    sim.run(2.0)
    first_hold = next(tk.t_ns for tk in sim.ticks if tk.t_ns >= t_drop and tk.hold is not None)
    held = _published_after(sim, first_hold)
    assert held and all(np.array_equal(command_of(m), neutral) for _, m in held)


def test_hold_command_is_only_for_delta_actions_and_within_limits():
    base = {"bundle": "b", "cameras.names": ["a"], "cameras.topics": ["a/image"], "joints.names": ["j0", "j1"],
            "safety.position_min": [-1.0, -1.0], "safety.position_max": [1.0, 1.0],
            "safety.max_step": [0.1, 0.1], "output.mode": "forward"}
    with pytest.raises(ConfigError) as e:
        C.from_params({**base, "output.hold_command": [0.0, 0.0]})
    assert e.value.parameter == "output.hold_command"
    with pytest.raises(ConfigError) as e:
        C.from_params({**base, "output.action_space": "delta", "output.hold_command": [0.0, 2.0]})
    assert e.value.parameter == "output.hold_command"
    with pytest.raises(ConfigError) as e:
        C.from_params({**base, "output.action_space": "delta", "output.mode": "joint_trajectory"})
    assert e.value.parameter == "output.action_space"
    assert C.from_params({**base, "output.action_space": "delta", "output.hold_command": [0.0, 0.0]})


# -- 3. non-finite measured joints ------------------------------------------------------------------

def test_a_non_finite_measured_output_joint_is_stale_state_and_never_commanded(sim_factory):
    """output.joint_names are joints of the joint state other than joints.names: a NaN there used to
    become the last command and stick."""
    out = [f"o{i}" for i in range(14)]
    sim = sim_factory(name="lw_s_nan_out", output__joint_names=out)
    good = {n: 0.1 for n in out}
    hook, _ = _moved_joint_hook(sim, 0.0, good)
    sim.joint_hook = hook
    sim.run(1.0)
    assert sim.ticks[-1].hold is None
    bad = dict(good, o3=float("nan"))
    sim.joint_hook, _ = _moved_joint_hook(sim, 0.0, bad)
    t_bad = sim.clock.now_ns
    sim.run(0.3)
    after = [tk for tk in sim.ticks if tk.t_ns > t_bad + TICK_NS]
    assert after and all(tk.hold is HoldReason.STALE_STATE for tk in after)
    assert all(np.isfinite(command_of(m)).all() for _, m in sim.output.messages)
    assert any("o3" in m for m, _ in sim.log.errors())
    sim.joint_hook, _ = _moved_joint_hook(sim, 0.0, good)  # the joint reports a number again
    sim.run(1.0)
    assert sim.ticks[-1].hold is None
    assert all(np.isfinite(command_of(m)).all() for _, m in sim.output.messages)


def test_a_joint_value_beyond_float32_is_refused(sim_factory):
    sim = sim_factory(name="lw_s_huge")
    sim.run(0.6)
    hook, _ = _moved_joint_hook(sim, 0.0)

    def huge(t_ns):
        msg = hook(t_ns)
        msg.position = [1e308] + list(msg.position[1:])
        return msg
    sim.joint_hook = huge
    t0 = sim.clock.now_ns
    sim.run(0.2)
    assert all(tk.hold is HoldReason.STALE_STATE for tk in sim.ticks if tk.t_ns > t0 + TICK_NS)


# -- 4. dry run never commands ---------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["forward", "joint_trajectory"])
def test_dry_run_publishes_nothing_whatever_holds(sim_factory, mode):
    sim = sim_factory(name=f"lw_s_dry_{mode}", dry_run=True, output__mode=mode)
    sim.run(0.6)
    sim.silent_cameras = {"cam_high"}  # stale cameras rank above dry_run
    sim.run(1.0)
    sim.publish_joints = False  # and stale state
    sim.run(0.6)
    assert not sim.output.messages
    assert len(sim.chunks.messages) > 0, "a dry run still computes chunks"


def test_switching_dry_run_on_sends_one_hold_then_nothing(sim_factory):
    sim = sim_factory(name="lw_s_dry_on")
    sim.run(1.0)
    assert sim.ticks[-1].hold is None
    n = len(sim.output.messages)
    assert sim.set_parameters(dry_run=True)[0]
    assert len(sim.output.messages) == n + 1  # the last command, repeated: stay there
    assert np.array_equal(command_of(sim.output.messages[-1][1]), command_of(sim.output.messages[-2][1]))
    sim.run(1.0)
    assert len(sim.output.messages) == n + 1


# -- 5. time running backwards ---------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["forward", "joint_trajectory"])
def test_a_backwards_clock_jump_holds_resets_and_recovers(sim_factory, mode):
    sim = sim_factory(name=f"lw_s_jump_{mode}", output__mode=mode)
    sim.run(1.5)
    assert sim.ticks[-1].hold is None
    before = sim.clock.now_ns
    sim.jump_clock(-1 * SEC)  # a looping bag / a /clock restart
    sim.run(0.02)
    jumped = [tk for tk in sim.ticks if tk.t_ns < before][-1]
    assert jumped.hold is not None, "the first tick after the jump must not follow the old plan"
    assert sim.controller.scheduler.tick(sim.clock.now_ns).status is TickStatus.EMPTY
    assert any("clock jumped back" in m for lv, m, _ in sim.log.records if lv == "warning")
    sim.run(1.5)
    assert sim.ticks[-1].hold is None, "it recovers on the new timeline"
    cap = max_steps(sim.params) + 1e-9
    if mode == "forward":  # the command never jumps across the reset
        cmds = [tk.command for tk in sim.ticks if tk.command is not None]
        assert all(np.all(np.abs(b - a) <= cap) for a, b in itertools.pairwise(cmds))


def test_use_sim_time_cannot_change_while_configured(tiny_bundle):
    """A node-level rule (the ROS clock is the node's): a real node, configured."""
    node, log, ctx, result = configure_only(tiny_bundle, "lw_s_simtime")
    try:
        assert result == TransitionCallbackReturn.SUCCESS, log.errors()
        refused = node.set_parameters([Parameter("use_sim_time", value=True)])[0]
        assert not refused.successful and "use_sim_time" in refused.reason
    finally:
        node.destroy_node()
        rclpy.try_shutdown(context=ctx)


# -- 6. joint states from the future ---------------------------------------------------------------

def test_a_joint_state_stamped_in_the_future_is_not_fresh(sim_factory):
    sim = sim_factory(name="lw_s_future")
    sim.run(1.0)
    hook, _ = _moved_joint_hook(sim, 0.0)
    sent = []

    def future_then_dead(t_ns):
        if sent:
            return None  # the publisher died
        sent.append(t_ns)
        return hook(t_ns + 5 * SEC)
    sim.joint_hook = future_then_dead
    sim.run(1.0)
    max_age = round(sim.params["joints.max_age"] * SEC)
    late = [tk for tk in sim.ticks if tk.t_ns > sent[0] + max_age + TICK_NS]
    assert late and all(tk.hold is HoldReason.STALE_STATE for tk in late)
    assert any("in the future" in m for m, _ in sim.log.errors())


def test_joint_age_window():
    j = C.JointConfig("joint_states", ("a",), max_age_ns=250_000_000, future_tolerance_ns=50_000_000)
    assert j.age_ok(0) and j.age_ok(250_000_000) and j.age_ok(-50_000_000)
    assert not j.age_ok(250_000_001) and not j.age_ok(-50_000_001)


# -- 7. a stale refused chunk never wipes a good plan ----------------------------------------------

def _chunk(stamp_ns: int, value: float, n: int = 24, dims: int = 2) -> ActionChunk:
    actions = np.full((n, dims), value, dtype=np.float32)
    return ActionChunk(actions=actions, stamp_ns=stamp_ns, dt_ns=20_000_000, trained_steps=n)


def test_a_void_or_out_of_order_nan_chunk_leaves_the_plan_alone():
    safety = SafetyFilter(SafetyConfig((-1.0, -1.0), (1.0, 1.0), (0.1, 0.1)), ("a", "b"))
    s = ChunkScheduler(ChunkConfig(max_inflight=2))
    stale = s.inference_started(0, obs_stamp_ns=0)
    s.reset()  # pause/resume: the request in flight is void
    fresh = s.inference_started(10_000_000, obs_stamp_ns=10_000_000)
    assert s.on_chunk(_chunk(10_000_000, 0.2), 50_000_000, fresh, check=safety.check_chunk) is ChunkOutcome.ACCEPTED
    assert s.on_chunk(_chunk(0, np.nan), 60_000_000, stale, check=safety.check_chunk) is ChunkOutcome.VOID
    assert s.tick(70_000_000).status is TickStatus.OK
    older = s.inference_started(70_000_000, obs_stamp_ns=5_000_000)
    assert s.on_chunk(_chunk(5_000_000, np.nan), 80_000_000, older, check=safety.check_chunk) \
        is ChunkOutcome.OUT_OF_ORDER
    assert s.tick(90_000_000).status is TickStatus.OK
    newer = s.inference_started(90_000_000, obs_stamp_ns=90_000_000)
    assert s.on_chunk(_chunk(90_000_000, np.nan), 100_000_000, newer, check=safety.check_chunk) \
        is ChunkOutcome.REFUSED
    assert s.tick(110_000_000).status is TickStatus.REFUSED and "non-finite" in s.last_refusal


# -- 8. input that could stall the control thread or grow memory ------------------------------------

def test_a_huge_instruction_is_refused_and_never_echoed_whole(sim_factory):
    sim = sim_factory(name="lw_s_huge_text")
    sim.run(0.5)
    sim.send_instruction("&amp;" * 2_000_000)  # 10 MB
    sim.run(0.5)
    assert sim.ticks[-1].hold is HoldReason.NO_INSTRUCTION
    errors = [m for m, _ in sim.log.errors()]
    assert any("instruction" in m and "characters" in m for m in errors)
    assert max(len(m) for lv, m, _ in sim.log.records) < 2000, "no log line carries the whole text"
    value = sim.status_values("control").get("instruction") or sim.status_values("inference").get("instruction", "")
    assert len(value) < 400


def test_an_empty_instruction_means_stop_not_the_default(sim_factory):
    sim = sim_factory(name="lw_s_empty_text")  # instruction.default is set in the demo profile
    sim.run(1.0)
    assert sim.ticks[-1].hold is None
    sim.send_instruction("")
    sim.run(0.3)
    assert sim.ticks[-1].hold is HoldReason.NO_INSTRUCTION
    sim.send_instruction(INSTRUCTION)
    sim.run(1.0)
    assert sim.ticks[-1].hold is None


def test_instruction_default_must_be_encodable_and_bounded():
    ic = C.InstructionConfig
    with pytest.raises(ConfigError) as e:
        ic("instruction", "bad \ud800 text")
    assert e.value.parameter == "instruction.default" and "UTF-8" in str(e.value)
    with pytest.raises(ConfigError) as e:
        ic("instruction", "x" * (C.MAX_INSTRUCTION_CHARS + 1))
    assert e.value.parameter == "instruction.default"


def test_joint_name_cache_is_bounded_and_huge_or_duplicated_name_lists_are_refused(sim_factory):
    sim = sim_factory(name="lw_s_names")
    sim.run(0.5)
    base, _ = _moved_joint_hook(sim, 0.0)
    for k in range(200):  # a new name list each message
        msg = base(sim.clock.now_ns)
        msg.name = list(msg.name) + [f"extra_{k}"]
        msg.position = list(msg.position) + [0.0]
        sim.deliver_joint_state(msg)
    assert sim.controller.joints.known_name_lists() <= JOINT_INDEX_CACHE
    n_err = len(sim.log.errors())
    msg = base(sim.clock.now_ns)
    msg.name = [f"j{i}" for i in range(C.MAX_JOINT_NAMES + 1)]
    msg.position = [0.0] * (C.MAX_JOINT_NAMES + 1)
    stamp = sim.controller.joints.stamp_ns
    sim.deliver_joint_state(msg)
    assert sim.controller.joints.stamp_ns == stamp and len(sim.log.errors()) == n_err + 1
    dup = base(sim.clock.now_ns + 1)
    dup.name = list(dup.name) + [dup.name[0]]
    dup.position = list(dup.position) + [2.0]
    sim.deliver_joint_state(dup)
    assert sim.controller.joints.stamp_ns == stamp
    assert "more than once" in sim.log.errors()[-1][0]


def _product_first(candidates, fixed, slop):
    for combo in itertools.product(*candidates):
        stamps = [*combo, fixed]
        if max(stamps) - min(stamps) < slop:
            return combo
    return None


def test_combination_search_equals_the_product_order():
    rng = random.Random(0)
    for _ in range(500):
        slop = rng.randint(1, 40)
        fixed = 100
        cands = [sorted({fixed + rng.randint(-slop, slop) for _ in range(rng.randint(1, 5))},
                        key=lambda s: abs(s - fixed)) for _ in range(rng.randint(0, 3))]
        got = S.first_combination(cands, fixed, slop)
        assert got == _product_first(cands, fixed, slop)


def test_adversarial_stamps_bound_the_matching_work():
    """4 cameras at queue_size 200 with stamps that are each within slop of a new frame but never
    of each other: the plain product visits 200^3 combinations per frame."""
    names = ["a", "b", "c", "d"]
    slop = 20_000_000
    sync = S.FrameSync(names, SyncConfig(slop_ns=slop, queue_size=200, max_age_ns=10 * SEC,
                                         camera_timeout_ns=10 * SEC), START_NS)
    now = START_NS + SEC
    t = START_NS + SEC // 2
    img = np.zeros((2, 2, 3), np.uint8)
    for k in range(200):
        sync.add("b", t - slop + 1 + k, img, now)  # all just below the new frame
        sync.add("c", t + slop - 200 + k, img, now)  # all just above it
        sync.add("d", t + k, img, now)
    assert sync.add("a", t, img, now) is None
    assert sync.stats().drops[S.DropReason.MATCH_LIMIT] == 1


# -- plausible items, settled --------------------------------------------------------------------

BASE = {"bundle": "b", "cameras.names": ["head"], "cameras.topics": ["head/image"],
        "joints.names": ["j0", "j1", "j2"], "safety.position_min": [-1.0] * 3,
        "safety.position_max": [1.0] * 3, "safety.max_step": [0.1] * 3}


def _info(**kw) -> C.BundleInfo:
    d = dict(cameras=("head",), state_names=("j0", "j1", "j2"), action_names=("j0", "j1", "j2"),
             trained_steps=24, action_rate_hz=20.0)
    d.update(kw)
    return C.BundleInfo(**d)


def test_a_bundle_without_action_rate_refuses_to_configure():
    with pytest.raises(ConfigError) as e:
        C.validate_against_bundle(C.from_params(BASE), _info(action_rate_hz=None))
    assert e.value.parameter == "bundle" and "--action-rate-hz" in str(e.value)


def test_output_names_are_compared_with_the_bundle_action_names():
    cfg = C.from_params({**BASE, "output.joint_names": ["j1", "j0", "j2"]})
    with pytest.raises(ConfigError) as e:
        C.validate_against_bundle(cfg, _info())
    assert e.value.parameter == "output.joint_names" and "'j1'" in str(e.value)
    warnings = C.validate_against_bundle(C.from_params({**BASE, "output.joint_names": ["x", "y", "z"]}), _info())
    assert any("j0->x" in w for w in warnings)
    assert C.validate_against_bundle(C.from_params({**BASE, "output.joint_names": ["x", "y", "z"]}),
                                     _info(action_names=("action_0", "action_1", "action_2"))) == []
    with pytest.raises(ConfigError) as e:
        C.validate_against_bundle(C.from_params({**BASE, "joints.names": ["j2", "j1", "j0"],
                                                 "output.joint_names": ["j0", "j1", "j2"]}), _info())
    assert e.value.parameter == "joints.names"
