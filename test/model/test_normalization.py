"""Normalizer against hand-computed values of the docs/model.md "Normalization" formulas."""

from __future__ import annotations

import numpy as np
import pytest

from lightwam_ros.model.normalization import Normalizer, NormMode

# numpy elementwise float math: correctly rounded on every CPU (SIMD or not); the tolerances are a few
# float32 rounding steps of the hand-computed values.
pytestmark = pytest.mark.numeric

ZSTATS = {"mean": [1.0, -2.0, 0.0], "std": [2.0, 0.5, 0.0]}


def test_z_score_state_and_clamp() -> None:
    norm = Normalizer("z-score", action=ZSTATS, state=ZSTATS)
    out = norm.normalize_state(np.array([3.0, -2.0, 0.0]))
    np.testing.assert_allclose(out, [1.0, 0.0, 0.0], atol=1e-6)  # (x - mean) / (std + 1e-8)
    assert out.dtype == np.float32
    out = norm.normalize_state(np.array([[100.0, -100.0, 1e-7]]))
    np.testing.assert_allclose(out, [[5.0, -5.0, 5.0]])  # clamped; std 0 -> 1e-7 / 1e-8 = 10 -> 5
    np.testing.assert_allclose(norm.normalize_state(np.array([1.0, -2.5, 0.0])), [0.0, -1.0, 0.0], atol=1e-6)


def test_z_score_denormalize_actions() -> None:
    norm = Normalizer("z-score", action=ZSTATS, state=ZSTATS)
    chunk = np.array([[0.0, 0.0, 0.0], [1.0, -2.0, 3.0]], dtype=np.float32)
    expected = np.array([[1.0, -2.0, 0.0], [3.0, -3.0, 3e-8]])  # x * (std + 1e-8) + mean
    np.testing.assert_allclose(norm.denormalize_actions(chunk), expected, rtol=1e-6, atol=1e-9)
    # Round trip inside the clamp range is the identity (up to float32).
    raw = np.array([0.5, -1.7, 0.0])
    np.testing.assert_allclose(norm.denormalize_actions(norm.normalize_actions(raw)), raw, atol=1e-6)


def test_min_max_with_the_tiny_range_rule() -> None:
    stats = {"min": [0.0, 1.0, -4.0], "max": [10.0, 1.00001, 4.0]}
    norm = Normalizer("min/max", action=stats, state=stats)
    # dim 0: 2 (x - 0) / 10 - 1; dim 1: range 1e-5 < 1e-4 -> x - min; dim 2: 2 (x + 4) / 8 - 1
    out = norm.normalize_state(np.array([5.0, 1.5, 4.0]))
    np.testing.assert_allclose(out, [0.0, 0.5, 1.0], atol=1e-6)
    np.testing.assert_allclose(norm.normalize_state(np.array([10.0, 1.0, -4.0])), [1.0, 0.0, -1.0], atol=1e-6)
    np.testing.assert_allclose(norm.normalize_state(np.array([40.0, 9.0, 0.0])), [5.0, 5.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(norm.denormalize_actions(np.array([-1.0, 0.25, 0.5])), [0.0, 1.25, 2.0], atol=1e-6)


def test_mode_aliases_and_errors_name_the_field() -> None:
    assert NormMode.parse("min-max") is NormMode.MIN_MAX
    assert NormMode.parse("Z-Score") is NormMode.Z_SCORE
    with pytest.raises(ValueError, match="normalization.mode"):
        NormMode.parse("l2")
    with pytest.raises(ValueError, match="normalization.state"):
        Normalizer("min/max", action={"min": [0], "max": [1]}, state={"mean": [0], "std": [1]})
    with pytest.raises(ValueError, match="normalization.action"):
        Normalizer("z-score", action={"mean": [0, 1], "std": [1]}, state=ZSTATS)
    norm = Normalizer("z-score", action=ZSTATS, state=ZSTATS)
    with pytest.raises(ValueError, match="state must have last dimension 3"):
        norm.normalize_state(np.zeros(2))


def test_from_dataset_stats_and_dict_round_trip() -> None:
    stats = {  # the layout of the official dataset_stats.json
        "action": {"default": {"global_mean": [0.0, 1.0], "global_std": [1.0, 2.0], "global_min": [-1, -3],
                               "global_max": [1, 5], "global_q01": [-0.9, -2.5], "global_q99": [0.9, 4.5],
                               "stepwise_mean": [[0.0, 1.0]] * 4}},
        "state": {"default": {"global_mean": [2.0], "global_std": [4.0], "global_min": [0.0], "global_max": [8.0],
                              "global_q01": [0.1], "global_q99": [7.9]}},
        "num_episodes": 3,
    }
    norm = Normalizer.from_dataset_stats(stats, "z-score")
    np.testing.assert_allclose(norm.normalize_state(np.array([6.0])), [1.0], atol=1e-6)
    np.testing.assert_allclose(norm.denormalize_actions(np.array([1.0, 1.0])), [1.0, 3.0], atol=1e-6)
    again = Normalizer.from_dict(norm.to_dict())
    # exact by construction: the same statistics through the same elementwise ops
    np.testing.assert_array_equal(again.denormalize_actions(np.array([0.3, -0.2])),
                                  norm.denormalize_actions(np.array([0.3, -0.2])))
    assert Normalizer.from_dataset_stats(stats, "min/max").normalize_state(np.array([4.0])).tolist() == [0.0]
    with pytest.raises(ValueError, match="missing 'action' -> 'arm'"):
        Normalizer.from_dataset_stats(stats, "z-score", action_key="arm")
