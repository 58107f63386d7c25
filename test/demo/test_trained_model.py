"""The trained tiny demo model, through the node path (offline replay: the bag's Image messages are
decoded, synchronised, tiled and run by the node's own controller and pipeline).

On a held-out joystick-scene bag (demo/reach_scene.py; seeds below 10000 were never trained on) at
100 +- 30 ms of simulated inference latency, with the shipped default merge (blend):
- the chunks predict where the arms went: open-loop MAE <= 0.3 x the hold-still baseline;
- the robot follows the policy at >= 95 % of the control ticks after the first chunk;
- a chunk handover jumps no more than 2 x the within-chunk step (p99, every joint).
The figures go to docs/replay.md ("The trained demo model").
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lightwam_ros.demo.synthetic import (
    DEFAULT_INSTRUCTION,
    Scene,
    SyntheticBagSpec,
    TimedInstruction,
    write_synthetic_bag,
)
from lightwam_ros.demo.train import trained_bundle_path
from lightwam_ros.replay.options import ReplayOptions
from lightwam_ros.replay.runner import run_replay

pytestmark = pytest.mark.slow

SECONDS = 8.0
LATENCY = {"latency_ms": 100.0, "latency_jitter_ms": 30.0, "seed": 1}


def reach_spec(**kw) -> SyntheticBagSpec:
    return SyntheticBagSpec(scene=Scene.REACH, seconds=SECONDS, seed=3, jitter_ms=2.0,
                            instructions=(TimedInstruction(DEFAULT_INSTRUCTION),), **kw)


@pytest.fixture(scope="module")
def bag(tmp_path_factory) -> Path:
    return write_synthetic_bag(reach_spec(), tmp_path_factory.mktemp("reach") / "bag")


@pytest.fixture(scope="module")
def baseline(bag, tmp_path_factory) -> dict:
    return run_replay(ReplayOptions(bag=bag, profile="demo", bundle=str(trained_bundle_path()),
                                    out=tmp_path_factory.mktemp("replay") / "out", plot=False, **LATENCY)).report


def test_chunks_predict_the_motion_better_than_holding_still(baseline):
    ole = baseline["open_loop_error"]
    assert ole["chunks_scored"] >= 10 and ole["steps_scored"] == 24
    assert ole["mae_vs_hold_still"] <= 0.3, ole


def test_the_robot_follows_the_policy_with_smooth_handovers(baseline):
    motion = baseline["motion"]
    assert motion["following_after_first_chunk"]["fraction"] >= 0.95, motion["following_after_first_chunk"]
    assert motion["seams"]["worst"]["ratio_p99"] <= 2.0, motion["seams"]
