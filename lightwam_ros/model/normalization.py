"""State normalisation and action de-normalisation, exactly as Light-WAM trained (docs/model.md, "Normalization").

Mirrors ``SingleFieldLinearNormalizer`` of the official ``src/lightwam/datasets/lerobot/utils/
normalizer.py``: statistics in float32, a per-dimension affine map x * scale + offset, a clamp to
[-5, 5] on the way in and (x - offset) / scale on the way out, with the same float32 operation order.
- z-score: scale = 1 / (std + 1e-8), offset = -mean / (std + 1e-8).
- min/max (and q01/q99 with those statistics): map [min, max] to [-1, 1]; a dimension whose range is
  below 1e-4 is only shifted, x - min (scale 1), so a constant dimension does not blow up.
Statistics come from the training run's ``dataset_stats.json`` (``from_dataset_stats``) and travel in
the bundle manifest (``to_dict`` / ``from_dict``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import Enum

import numpy as np

STD_REG = 1e-8
RANGE_TOL = 1e-4
CLAMP = 5.0
STAT_KEYS = ("mean", "std", "min", "max", "q01", "q99")


class NormMode(str, Enum):
    Z_SCORE = "z-score"
    MIN_MAX = "min/max"
    Q01_Q99 = "q01/q99"

    @classmethod
    def parse(cls, value: str | NormMode) -> NormMode:
        aliases = {"zscore": "z-score", "z_score": "z-score", "min-max": "min/max", "minmax": "min/max",
                   "min_max": "min/max", "q01-q99": "q01/q99"}
        text = (value.value if isinstance(value, NormMode)
                else aliases.get(str(value).strip().lower(), str(value).strip().lower()))
        try:
            return cls(text)
        except ValueError:
            raise ValueError(
                f"normalization.mode must be one of {[m.value for m in cls]}, got {value!r}"
            ) from None

    @property
    def required(self) -> tuple[str, str]:
        return {"z-score": ("mean", "std"), "min/max": ("min", "max"), "q01/q99": ("q01", "q99")}[self.value]


def _affine(stats: Mapping[str, np.ndarray], mode: NormMode) -> tuple[np.ndarray, np.ndarray]:
    """float32 (scale, offset) with the reference's operation order."""
    if mode is NormMode.Z_SCORE:
        denom = stats["std"] + np.float32(STD_REG)
        return np.float32(1.0) / denom, -stats["mean"] / denom
    lo, hi = stats[mode.required[0]], stats[mode.required[1]]
    span = hi - lo
    ignore = span < RANGE_TOL
    span = np.where(ignore, np.float32(2.0), span).astype(np.float32)
    scale = (np.float32(2.0) / span).astype(np.float32)
    offset = (np.float32(-1.0) - scale * lo).astype(np.float32)
    offset = np.where(ignore, np.float32(0.0) - lo, offset).astype(np.float32)
    return scale, offset


def _field(name: str, stats: Mapping[str, Sequence[float]], mode: NormMode) -> dict[str, np.ndarray]:
    if not isinstance(stats, Mapping):
        raise ValueError(f"normalization.{name} must be a mapping of statistics, got {type(stats).__name__}")
    unknown = set(stats) - set(STAT_KEYS)
    if unknown:
        raise ValueError(f"normalization.{name}: unknown statistics {sorted(unknown)}; known {STAT_KEYS}")
    missing = [k for k in mode.required if k not in stats]
    if missing:
        raise ValueError(f"normalization.{name}: mode {mode.value!r} needs {list(mode.required)}, missing {missing}")
    arrays = {k: np.asarray(v, dtype=np.float32).reshape(-1) for k, v in stats.items()}
    sizes = {k: a.size for k, a in arrays.items()}
    if len(set(sizes.values())) != 1 or 0 in sizes.values():
        raise ValueError(f"normalization.{name}: statistics must be non-empty and of equal length, got {sizes}")
    for k, a in arrays.items():
        if not np.all(np.isfinite(a)):
            raise ValueError(f"normalization.{name}.{k} contains NaN or Inf")
    if mode is NormMode.Z_SCORE and np.any(arrays["std"] < 0):
        raise ValueError(f"normalization.{name}.std must be >= 0")
    return arrays


class Normalizer:
    """normalize_state (robot units -> model input) and denormalize_actions (model output -> robot units)."""

    def __init__(self, mode: str | NormMode, action: Mapping[str, Sequence[float]],
                 state: Mapping[str, Sequence[float]]):
        self.mode = NormMode.parse(mode)
        self.action_stats = _field("action", action, self.mode)
        self.state_stats = _field("state", state, self.mode)
        self._action_scale, self._action_offset = _affine(self.action_stats, self.mode)
        self._state_scale, self._state_offset = _affine(self.state_stats, self.mode)

    @property
    def action_dim(self) -> int:
        return int(self._action_scale.size)

    @property
    def state_dim(self) -> int:
        return int(self._state_scale.size)

    @staticmethod
    def _check(x: np.ndarray, dim: int, what: str) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)  # the reference casts the raw state to float32 first
        if x.shape[-1:] != (dim,):
            raise ValueError(f"{what} must have last dimension {dim}, got shape {x.shape}")
        return x

    def normalize_state(self, state: np.ndarray) -> np.ndarray:
        """[..., P] robot units -> float32, normalised and clamped to [-5, 5]."""
        x = self._check(state, self.state_dim, "state")
        return np.clip(x * self._state_scale + self._state_offset, -CLAMP, CLAMP).astype(np.float32)

    def normalize_actions(self, actions: np.ndarray) -> np.ndarray:
        """[..., A] robot units -> float32 model units (clamped, as in training targets)."""
        x = self._check(actions, self.action_dim, "actions")
        return np.clip(x * self._action_scale + self._action_offset, -CLAMP, CLAMP).astype(np.float32)

    def denormalize_actions(self, actions: np.ndarray) -> np.ndarray:
        """[..., A] model output -> float32 robot units."""
        x = self._check(actions, self.action_dim, "actions")
        return ((x - self._action_offset) / self._action_scale).astype(np.float32)

    def to_dict(self) -> dict:
        return {
            "mode": self.mode.value,
            "action": {k: v.tolist() for k, v in self.action_stats.items()},
            "state": {k: v.tolist() for k, v in self.state_stats.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> Normalizer:
        unknown = set(data) - {"mode", "action", "state"}
        if unknown:
            raise ValueError(f"normalization: unknown keys {sorted(unknown)}")
        for key in ("mode", "action", "state"):
            if key not in data:
                raise ValueError(f"normalization.{key} is missing")
        return cls(data["mode"], data["action"], data["state"])

    @classmethod
    def from_dataset_stats(
        cls, stats: Mapping, mode: str | NormMode, action_key: str = "default", state_key: str = "default"
    ) -> Normalizer:
        """From the official dataset_stats.json content: {"action": {key: {"global_mean": [...], ...}}, "state": ...}.

        Only the ``global_*`` statistics are used (use_stepwise_action_norm is False in every shipped config).
        """
        def pick(group: str, key: str) -> dict[str, list[float]]:
            try:
                leaf = stats[group][key]
            except (KeyError, TypeError):
                raise ValueError(f"dataset_stats: missing {group!r} -> {key!r}") from None
            return {k.removeprefix("global_"): v for k, v in leaf.items()
                    if k.startswith("global_") and k.removeprefix("global_") in STAT_KEYS}

        return cls(mode, pick("action", action_key), pick("state", state_key))
