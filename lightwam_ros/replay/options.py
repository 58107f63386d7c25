"""What one `lightwam replay` run is asked to do, and the error it raises when it cannot.

Its own module because the runner and both modes (offline.py, live.py) need these, and the runner
calls the modes: defined in runner.py they made runner <-> offline/live an import circle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from lightwam_ros.ros.launch_config import DDS_PROFILES

OUTPUT_BAG = "outputs"


class ReplayMode(str, Enum):
    OFFLINE = "offline"
    LIVE = "live"


class ReplayError(RuntimeError):
    """Replay cannot run as asked; the message names the bag, topic, parameter or option."""


@dataclass(frozen=True)
class ReplayOptions:
    """One replay run (the `lightwam replay` arguments)."""

    bag: Path
    profile: str  # profile name or YAML path (config.resolve_profile)
    out: Path  # output directory: outputs/ (bag), report.json, plot.png
    bundle: str | None = None  # overrides the profile's `bundle`
    mode: ReplayMode = ReplayMode.OFFLINE
    rate: float = 1.0  # live: bag seconds per wall second
    start_s: float = 0.0  # window start, seconds after the bag's first message
    duration_s: float | None = None  # window length (None: to the end)
    latency_ms: float = 0.0  # offline: simulated inference latency on the bag clock (the mean with a jitter)
    latency_jitter_ms: float = 0.0  # offline: > 0: latency uniform on latency_ms +- this (replay/latency.py)
    latency_file: Path | None = None  # offline: draw latencies from these measured ones (`lightwam bench --json`)
    seed: int = 0  # offline: seeds the latency draws (jitter, file): same seed, same report
    namespace: str = "/"  # node namespace (relative profile topics resolve under it)
    reference_topic: str | None = None  # open-loop reference (default: the profile's joints.state_topic)
    keep_frames: bool = False  # offline: keep every inference request's images in the result (tests)
    tail_s: float = 1.0  # live: bag seconds the clock keeps running after the last message
    dds_profile: str = "shm"  # live: Fast DDS profile of the replay and the node (launch_config.DDS_PROFILES, none)
    # live: argv the node's command line is appended to (e.g. ip netns exec NS): the node runs elsewhere
    # while the replay publishes from here; the prefix must keep the environment and see the same files
    node_prefix: tuple[str, ...] = ()
    plot: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "bag", Path(self.bag))
        object.__setattr__(self, "out", Path(self.out))
        object.__setattr__(self, "mode", ReplayMode(self.mode))
        if not (self.rate > 0 and math.isfinite(self.rate)):
            raise ReplayError(f"--rate must be > 0, got {self.rate}")
        if self.start_s < 0:
            raise ReplayError(f"--start must be >= 0 s, got {self.start_s}")
        if self.duration_s is not None and not self.duration_s > 0:
            raise ReplayError(f"--duration must be > 0 s, got {self.duration_s}")
        if not (self.latency_ms >= 0 and math.isfinite(self.latency_ms)):
            raise ReplayError(f"--latency must be >= 0 ms, got {self.latency_ms}")
        if not (0 <= self.latency_jitter_ms <= self.latency_ms):
            raise ReplayError(f"--latency-jitter must be in [0, --latency] ms (a latency is never negative), "
                              f"got {self.latency_jitter_ms} with --latency {self.latency_ms}")
        if self.latency_file is not None:
            object.__setattr__(self, "latency_file", Path(self.latency_file))
            if self.latency_ms or self.latency_jitter_ms:
                raise ReplayError("--latency-file draws every latency from the file: leave out --latency and "
                                  "--latency-jitter")
        if self.dds_profile not in (*DDS_PROFILES, "none"):
            raise ReplayError(f"--dds-profile must be one of {[*DDS_PROFILES, 'none']}, got {self.dds_profile!r}")
        object.__setattr__(self, "node_prefix", tuple(self.node_prefix))
        if self.mode is ReplayMode.OFFLINE and self.node_prefix:
            raise ReplayError("--node-prefix starts the node in another place: it needs --mode live")
        if self.tail_s < 0:
            raise ReplayError(f"tail_s must be >= 0, got {self.tail_s}")

    @property
    def output_bag(self) -> Path:
        return self.out / OUTPUT_BAG
