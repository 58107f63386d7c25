"""Plain data passed between the stages of the data flow (docs/design.md, "Data flow").

Times are integer nanoseconds on the ROS clock (header stamps), never floats, so that sync,
staleness and scheduling decisions are exact and testable on a simulated clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class FrameSet:
    """One synchronized observation: a frame per camera, the joint state and the instruction."""

    images: dict[str, np.ndarray]  # camera name (bundle layout) -> uint8 [H, W, 3] RGB
    stamp_ns: int  # observation time: the newest camera stamp of the set
    state: np.ndarray | None = None  # float64 [P] in the bundle's state order, robot units
    instruction: str | None = None
    spread_ns: int = 0  # newest - oldest camera stamp of the set


@dataclass(frozen=True)
class ActionChunk:
    """De-normalized actions predicted from one observation.

    actions[k] is the command for time stamp_ns + k * dt_ns (k = 0 is the action issued at the
    observation). Only the first ``trained_steps`` rows were supervised in training; later rows
    are extrapolations and must never be executed.
    """

    actions: np.ndarray  # float32 [H, A], robot units
    stamp_ns: int  # observation stamp the chunk was computed from
    dt_ns: int  # step period
    trained_steps: int  # leading steps the checkpoint was trained to predict
    timings_ms: dict[str, float] = field(default_factory=dict)  # per-stage latency

    def __post_init__(self) -> None:
        if self.actions.ndim != 2:
            raise ValueError(f"ActionChunk.actions must be [H, A], got shape {self.actions.shape}")
        if self.dt_ns <= 0:
            raise ValueError(f"ActionChunk.dt_ns must be > 0, got {self.dt_ns}")
        if not 0 < self.trained_steps:
            raise ValueError(f"ActionChunk.trained_steps must be > 0, got {self.trained_steps}")

    @property
    def horizon(self) -> int:
        return int(self.actions.shape[0])

    @property
    def executable_steps(self) -> int:
        return min(self.horizon, self.trained_steps)
