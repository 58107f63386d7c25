"""The joystick scene (demo/reach_scene.py) and the training of the tiny demo model (demo/train.py).

The scene is checked against its defining equations: the joints obey q' = G p(t) - leak (q - mean)
(finite differences of the integrated trajectory), each red disc is where its path says in the
rendered frame, the same seed gives the same recording. Training is checked for determinism on a
reduced configuration (the same seed twice gives the same weights, to float tolerance), for the
official trainable set (the VAE and the DiT base weights stay as initialised), and the shipped
trained bundle for being the output of today's code (its manifest records the configuration and
scene version that made it).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lightwam_ros.demo.reach_scene import (
    BLUE,
    DISC_RADIUS,
    GRID_HZ,
    JOINT_MEAN,
    JOINT_STD,
    LEAK_PER_S,
    REACH_CAMERAS,
    RED,
    TRAINING_SEED_BASE,
    ReachEpisode,
    offset_decay,
)
from lightwam_ros.demo.synthetic import Scene, SyntheticBagSpec, iter_messages


def test_joints_obey_the_joystick_equation() -> None:
    """q' = G p(t) - leak (q - mean) (finite differences of the integrated trajectory)."""
    ep = ReachEpisode(seed=5, seconds=6.0)
    t = np.arange(0.5, 5.5, 0.01)
    h = 1.0 / GRID_HZ
    dq = (ep.joints(t + h) - ep.joints(t - h)) / (2 * h)
    want = ep.velocities(t) - LEAK_PER_S * (ep.joints(t) - JOINT_MEAN)
    assert np.abs(dq - want).max() < 2e-3 * np.abs(want).max()
    # bounded well inside the demo limits (mean +- 3 std): no refusals from the scene itself
    z = np.abs(ep.joints(t) - JOINT_MEAN) / JOINT_STD
    assert 0.3 < z.max() < 2.0
    # a displaced start is followed by the same motion plus the decaying displacement
    assert offset_decay(1.0 / LEAK_PER_S) == pytest.approx(np.exp(-1.0))


def test_the_red_disc_is_where_its_path_says_and_the_seed_fixes_everything() -> None:
    ep = ReachEpisode(seed=11, seconds=3.0)
    blue = 0
    for cam in range(len(REACH_CAMERAS)):
        img = ep.render(cam, 1.3, 240, 320).astype(int)
        red = np.all(np.abs(img - np.asarray(RED)) < 8, axis=-1)
        ys, xs = np.nonzero(red)
        x, y = ep.paths[(cam, "red")].at(1.3)
        assert abs(np.median(xs) - (0.5 + 0.5 * x) * 319) < 3 and abs(np.median(ys) - (0.5 + 0.5 * y) * 239) < 3
        assert red.sum() == pytest.approx(np.pi * (DISC_RADIUS * 240) ** 2, rel=0.1)
        blue += np.all(np.abs(img - np.asarray(BLUE)) < 8, axis=-1).sum()
    assert blue > 0
    again = ReachEpisode(seed=11, seconds=3.0)
    assert np.array_equal(again.render(1, 2.0, 60, 80), ep.render(1, 2.0, 60, 80))
    assert np.array_equal(again.joints(np.arange(0, 3, 0.1)), ep.joints(np.arange(0, 3, 0.1)))
    assert not np.array_equal(ReachEpisode(seed=12, seconds=3.0).render(1, 2.0, 60, 80), ep.render(1, 2.0, 60, 80))


def test_reach_bags_record_the_episode_and_refuse_training_seeds() -> None:
    spec = SyntheticBagSpec(scene=Scene.REACH, seconds=0.5, seed=4, height=48, width=64)
    joints = [m for m in iter_messages(spec) if m.msgtype.endswith("JointState")]
    t = (joints[7].stamp_ns - spec.start_ns) / 1e9
    assert np.allclose(joints[7].payload["position"], ReachEpisode(seed=4, seconds=0.5).joints(t))
    with pytest.raises(ValueError, match="training episodes"):
        SyntheticBagSpec(scene=Scene.REACH, seed=TRAINING_SEED_BASE)
    with pytest.raises(ValueError, match="cameras"):
        SyntheticBagSpec(scene=Scene.REACH, cameras=("a", "b"))


@pytest.mark.slow
def test_training_is_deterministic_and_trains_the_official_set() -> None:
    from lightwam_ros.demo.tiny_bundle import demo_state_dict
    from lightwam_ros.demo.train import TrainingConfig, train, trainable

    cfg = TrainingConfig(episodes=2, samples_per_episode=3, validation_episodes=1, steps=4, batch=4,
                         image_hw=(60, 80))
    a, report_a = train(cfg)
    b, report_b = train(cfg)
    assert report_a.losses == pytest.approx(report_b.losses, rel=1e-5)
    init = demo_state_dict("tiny", seed=cfg.seed)
    changed = set()
    for name, p in a.state_dict().items():
        assert torch.allclose(p, b.state_dict()[name], rtol=1e-5, atol=1e-6), name
        if not torch.equal(p, init[name]):
            changed.add(name)
    assert changed and all(trainable(n) for n in changed)
    assert any(n.startswith("dit.wam_adapters.") for n in changed) and any("lora" in n for n in changed)
    assert not any(n.startswith("vae.") for n in changed)
    assert np.isfinite(report_a.losses).all() and set(report_a.validation) == {"mae", "hold_mae", "ratio"}


def test_the_shipped_trained_bundle_is_what_todays_code_trains() -> None:
    """Changing the scene or the training without regenerating the shipped bundle fails here."""
    from lightwam_ros.bundle.format import Bundle
    from lightwam_ros.demo.train import TRAINED_LAYOUT, TrainingConfig, trained_bundle_path

    bundle = Bundle.load(trained_bundle_path())
    record = bundle.manifest["source"]["demo"]
    assert record["trained"] == json.loads(json.dumps(TrainingConfig().to_dict()))
    assert bundle.embodiment.layout == TRAINED_LAYOUT
    assert record["validation"]["ratio"] < 0.3
