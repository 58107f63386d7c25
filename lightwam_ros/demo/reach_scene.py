"""The "joystick" scene: synthetic recordings whose joint motion a tiny model can learn.

Why: a demo or test model with random weights predicts noise around one trend, so open-loop error
and the seam metrics of replay mean nothing. In this scene the arms follow a deterministic,
learnable law, and the tiny demo model (demo/train.py) learns it:

- every camera shows a red disc and a blue disc on the same grey background, each circling the
  image centre counter-clockwise at ORBIT_HZ with its own radius and phase (per episode);
- the red discs are joysticks: a disc's offset from the image centre sets joint *velocities*. The
  left wrist camera's disc drives the left arm (joints 0-5), the right wrist camera's the right arm,
  the top camera's the two grippers (x: left, y: right). The blue discs are distractors;
- the joints follow q' = v(red discs) - leak * (q - mean), so they stay around the dataset mean.

What the model learns from: the joints integrate the discs' circular motion, so the joint state at
one instant already says where each disc is on its circle and therefore how the arms will move
next; the views repeat it. The trained tiny model does predict from the state (docs/replay.md,
"The trained demo model", measures that swapping cameras or colours changes nothing), so it shows
what replay measures of a policy's motion, not whether the node tiles the right pixels -- the
preprocessing tests compare canvases against independent references for that.

Everything is a pure function of (seed, time): the same seed always gives the same recording.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import cv2
import numpy as np

REACH_CAMERAS: tuple[str, ...] = ("cam_high", "cam_left_wrist", "cam_right_wrist")
RED = (230, 40, 40)
BLUE = (40, 40, 230)
BACKGROUND_TOP = 150  # grey level at the top of the background gradient
BACKGROUND_BOTTOM = 100
DISC_RADIUS = 0.14  # of min(height, width)
RADIUS_RANGE = (0.3, 0.75)  # disc orbit radius, in half-sizes of the image
ORBIT_HZ = 0.25  # revolutions per second of every disc
JOYSTICK_GAIN = 3.5  # joint velocity, in standard deviations per second, per unit disc offset
LEAK_PER_S = 0.3  # pull of every joint towards its mean (1/s)
BURN_IN_S = 10.0  # the joints are integrated from the mean this long before t = 0 (no start-up offset)
GRID_HZ = 1000.0  # integration grid of the joint trajectory
# Plausible ALOHA-like joint statistics (rad; gripper opening in [0, 1]), per arm, left arm first: the
# demo bundles' normalisation statistics and the centre the scene's joints move around.
ARM_MEAN = (0.0, -0.45, 0.65, 0.0, 0.35, 0.0, 0.6)
ARM_STD = (0.25, 0.3, 0.3, 0.2, 0.3, 0.25, 0.35)
JOINT_MEAN: tuple[float, ...] = ARM_MEAN + ARM_MEAN
JOINT_STD: tuple[float, ...] = ARM_STD + ARM_STD
# Episode seeds from here on are the trained demo model's training and validation episodes; a bag
# recorded with a lower seed is held out by construction.
TRAINING_SEED_BASE = 10_000


@dataclass(frozen=True)
class DiscPath:
    """Offset from the image centre (x right, y down, in half-sizes): a circle around the centre."""

    radius: float
    phase: float

    def at(self, t_s: np.ndarray | float) -> np.ndarray:
        angle = 2 * np.pi * ORBIT_HZ * np.asarray(t_s, dtype=np.float64) + self.phase
        return self.radius * np.stack([np.cos(angle), -np.sin(angle)], axis=-1)

    @classmethod
    def draw(cls, rng: np.random.Generator) -> DiscPath:
        return cls(float(rng.uniform(*RADIUS_RANGE)), float(rng.uniform(0.0, 2 * np.pi)))


def joystick_gains(std: np.ndarray) -> np.ndarray:
    """[14 joints, 3 cameras x 2 axes]: joint velocity (units/s) per unit red-disc offset.

    Left arm joints 0-5 read the left wrist disc, the right arm joints 7-12 the right wrist disc, each
    joint along its own direction in the image plane; the grippers (6, 13) read the top disc's x and y.
    Gains are in units of each joint's standard deviation, so every joint moves by about the same
    fraction of its range.
    """
    gains = np.zeros((14, 6))
    for arm, cam in ((0, 1), (1, 2)):
        for j in range(6):
            angle = math.pi * (j / 6.0 + 0.25 * arm)
            gains[7 * arm + j, 2 * cam:2 * cam + 2] = (math.cos(angle), math.sin(angle))
    gains[6, 0] = 1.0
    gains[13, 1] = 1.0
    return JOYSTICK_GAIN * gains * np.asarray(std, dtype=np.float64).reshape(-1, 1)


@dataclass(frozen=True)
class ReachEpisode:
    """One recording of the scene: disc paths from ``seed``, joints integrated around ``mean``."""

    seed: int
    seconds: float
    mean: tuple[float, ...] = JOINT_MEAN
    std: tuple[float, ...] = JOINT_STD

    def __post_init__(self) -> None:
        if len(self.mean) != 14 or len(self.std) != 14:
            raise ValueError(f"the reach scene drives 14 joints; got {len(self.mean)} means, {len(self.std)} stds")
        if not self.seconds > 0:
            raise ValueError(f"ReachEpisode.seconds must be > 0, got {self.seconds}")

    @cached_property
    def paths(self) -> dict[tuple[int, str], DiscPath]:
        """(camera index, 'red' | 'blue') -> path; a pure function of the seed."""
        rng = np.random.default_rng([int(self.seed), 0x5EED])
        return {(c, colour): DiscPath.draw(rng) for c in range(len(REACH_CAMERAS)) for colour in ("red", "blue")}

    def joysticks(self, t_s: np.ndarray | float) -> np.ndarray:
        """[..., 6]: the red discs' (x, y) of cam_high, cam_left_wrist, cam_right_wrist."""
        return np.concatenate([self.paths[(c, "red")].at(t_s) for c in range(len(REACH_CAMERAS))], axis=-1)

    def velocities(self, t_s: np.ndarray | float) -> np.ndarray:
        """[..., 14]: the joystick part of the joint velocities (robot units per second)."""
        return self.joysticks(t_s) @ joystick_gains(np.asarray(self.std)).T

    @cached_property
    def _grid(self) -> np.ndarray:
        """Joint positions on the integration grid, [n, 14] (exact exponential step for the leak)."""
        n = int(math.ceil((self.seconds + BURN_IN_S) * GRID_HZ)) + 2
        v = self.velocities(np.arange(n) / GRID_HZ - BURN_IN_S)  # [n, 14]
        decay = math.exp(-LEAK_PER_S / GRID_HZ)
        gain = (1.0 - decay) / LEAK_PER_S
        # d = q - mean: d' = v - leak d, v held over a grid step
        d = np.zeros((n, 14))
        for i in range(n - 1):
            d[i + 1] = decay * d[i] + gain * v[i]
        return d + np.asarray(self.mean, dtype=np.float64)

    def joints(self, t_s: np.ndarray | float) -> np.ndarray:
        """Joint positions at ``t_s`` (linear interpolation on the 1 kHz grid), [..., 14]."""
        t = (np.clip(np.asarray(t_s, dtype=np.float64), 0.0, self.seconds) + BURN_IN_S) * GRID_HZ
        i0 = np.floor(t).astype(np.int64)
        w = (t - i0)[..., None]
        grid = self._grid
        return (1.0 - w) * grid[i0] + w * grid[np.minimum(i0 + 1, len(grid) - 1)]

    def render(self, camera_index: int, t_s: float, height: int, width: int) -> np.ndarray:
        """RGB uint8 [H, W, 3] of camera ``camera_index`` at ``t_s``."""
        return render_view({colour: self.paths[(camera_index, colour)].at(t_s) for colour in ("red", "blue")},
                           height, width)


def offset_decay(t_s: np.ndarray | float) -> np.ndarray:
    """How much of a displacement of the joints is left after ``t_s``: the velocities do not depend
    on the joints, so a start state moved by d is followed by the same motion plus d * exp(-leak t)
    (what the training's state augmentation relies on)."""
    return np.exp(-LEAK_PER_S * np.asarray(t_s, dtype=np.float64))


def render_view(offsets: dict[str, np.ndarray], height: int, width: int) -> np.ndarray:
    """The grey background with the blue disc drawn first and the red one on top of it."""
    ramp = np.linspace(BACKGROUND_TOP, BACKGROUND_BOTTOM, height, dtype=np.float32)
    img = np.repeat(np.repeat(ramp[:, None, None], width, axis=1), 3, axis=2).astype(np.uint8)
    radius = max(2, int(round(DISC_RADIUS * min(height, width))))
    for colour, rgb in (("blue", BLUE), ("red", RED)):
        x, y = offsets[colour]
        centre = (int(round((0.5 + 0.5 * x) * (width - 1))), int(round((0.5 + 0.5 * y) * (height - 1))))
        cv2.circle(img, centre, radius, rgb, -1, cv2.LINE_AA)
    return img
