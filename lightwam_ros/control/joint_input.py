"""JointStateInput: the joint state the controller may act on, and the state at a frame set's
observation time.

Why its own module: a JointState message is the one input whose content decides whether the robot
may move at all (stale or untrustworthy -> hold), and it must be checked in bounded time before
any per-name work -- it arrives on the thread that also runs the control tick. Every rule about it
lives here, as plain Python over names, positions and stamps; the ROS node only unpacks the message.

Rules:
- at most MAX_JOINT_NAMES names, one position per name, no used name twice, every joint of
  joints.names present: otherwise the message is dropped (the previous state ages out as if the
  message had been lost) and the returned text says why;
- NaN/Inf or beyond-float32 values in any used joint make the state unusable at once (hold);
- a stamp further in the future than joints.future_tolerance is dropped (clock sync problem);
  an unstamped message is taken at its arrival time;
- ``state_at(stamp)`` pairs an observation with the latest state recorded at or before it (as in
  training), or the oldest kept one if every kept state is newer; more than joints.max_age away:
  no pairing (hold, like a stale joint state).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import numpy as np

from lightwam_ros.config import MAX_JOINT_NAMES, PolicyConfig

JOINT_HISTORY = 4096  # joint states kept to pair a frame set with the state at its observation time
JOINT_INDEX_CACHE = 16  # distinct JointState name lists whose index maps are kept (a robot sends one or two)
FLOAT32_MAX = float(np.finfo(np.float32).max)  # joint values beyond this become inf in the model input
SHOWN_NAMES = 20  # names of a message quoted in an error


class JointStateInput:
    """The latest usable joint state (joints.names order), the measured action joints
    (output.joint_names order, when the message carries them) and a short history for pairing."""

    def __init__(self, config: PolicyConfig, topic: str) -> None:
        self.config = config  # replaced on runtime parameter updates (max_age, future_tolerance)
        self._topic = topic  # resolved topic name, quoted in errors
        self.state: np.ndarray | None = None
        self.measured: np.ndarray | None = None
        self.stamp_ns: int | None = None
        # recent (stamp_ns, state) in stamp order; pruned to joints.max_age + sync.max_age (a set
        # older than sync.max_age is never used)
        self._history: deque[tuple[int, np.ndarray]] = deque(maxlen=JOINT_HISTORY)
        self._index: dict[tuple[str, ...], tuple[np.ndarray, np.ndarray | None]] = {}

    # -- input -----------------------------------------------------------------------------------

    def offer(self, names: Sequence[str], positions: Sequence[float], stamp_ns: int, now_ns: int) -> str | None:
        """Take one message. Returns None when it was taken, else the error to report (the message
        was dropped, or -- NaN/Inf -- the state was made unusable)."""
        if len(names) > MAX_JOINT_NAMES or len(positions) != len(names):
            return (f"joint state on '{self._topic}' has {len(names)} names and {len(positions)} positions "
                    f"(at most {MAX_JOINT_NAMES}, one position per name); dropped")
        key = tuple(names)
        index = self._index.get(key)
        if index is None:
            index, error = self._index_for(key)
            if index is None:
                return error
        position = np.asarray(positions, dtype=np.float64)
        state = position[index[0]]
        measured = position[index[1]] if index[1] is not None else None
        used = state if measured is None else np.concatenate([state, measured])
        if not (np.abs(used) <= FLOAT32_MAX).all():  # False for NaN too
            cfg = self.config
            bad = sorted({n for n, v in zip((*cfg.joints.names, *cfg.output.joint_names), used)
                          if not abs(v) <= FLOAT32_MAX})
            self.forget_current()  # stale at once: hold until a good one
            return f"joint state has NaN/Inf or out-of-range values for {bad}; holding"
        stamp = stamp_ns if stamp_ns > 0 else now_ns  # unstamped: arrival time
        tolerance = self.config.joints.future_tolerance_ns
        if stamp - now_ns > tolerance:
            return (f"joint state on '{self._topic}' is stamped {(stamp - now_ns) / 1e9:.3f} s in the future "
                    f"(joints.future_tolerance {tolerance / 1e9:g} s): are the clocks of the robot and this "
                    "host synchronized? dropped")
        self.state, self.measured, self.stamp_ns = state, measured, stamp
        self._remember(stamp, state)
        return None

    def _index_for(self, names: tuple[str, ...]) -> tuple[tuple[np.ndarray, np.ndarray | None] | None, str]:
        """Index maps of a new name list (cached, at most JOINT_INDEX_CACHE lists), or (None, why)."""
        cfg = self.config
        where: dict[str, int] = {}
        duplicated: set[str] = set()
        for i, n in enumerate(names):
            if n in where:
                duplicated.add(n)
            where[n] = i
        used_dups = sorted(duplicated & {*cfg.joints.names, *cfg.output.joint_names})
        if used_dups:
            return None, f"joint state on '{self._topic}' names {used_dups} more than once; dropped"
        missing = [n for n in cfg.joints.names if n not in where]
        if missing:
            shown = list(names[:SHOWN_NAMES]) + (["..."] if len(names) > SHOWN_NAMES else [])
            return None, (f"joint state on '{self._topic}' lacks joints {missing} of joints.names (it has "
                          f"{shown}); holding")
        state_idx = np.array([where[n] for n in cfg.joints.names])
        out = cfg.output.joint_names
        measured_idx = np.array([where[n] for n in out]) if all(n in where for n in out) else None
        if len(self._index) >= JOINT_INDEX_CACHE:
            self._index.clear()
        self._index[names] = (state_idx, measured_idx)
        return self._index[names], ""

    def _remember(self, stamp: int, state: np.ndarray) -> None:
        history = self._history
        if history and stamp <= history[-1][0]:
            if stamp == history[-1][0]:  # duplicate stamp: the newer message wins
                history.pop()
            else:  # time ran backwards (sim clock reset, bag loop): the old history means nothing
                history.clear()
        history.append((stamp, state))
        horizon = stamp - self.config.joints.max_age_ns - self.config.sync.max_age_ns
        while len(history) > 1 and history[1][0] <= horizon:  # keep one at or before the horizon
            history.popleft()

    # -- queries -----------------------------------------------------------------------------------

    def fresh(self, now_ns: int) -> bool:
        return self.stamp_ns is not None and self.config.joints.age_ok(now_ns - self.stamp_ns)

    def age_ns(self, now_ns: int) -> int | None:
        return None if self.stamp_ns is None else now_ns - self.stamp_ns

    def state_at(self, stamp_ns: int) -> np.ndarray | None:
        """The joint state paired with an observation at ``stamp_ns`` (see the module doc)."""
        history = self._history
        if not history:
            return None
        chosen = history[0]
        for entry in reversed(history):
            if entry[0] <= stamp_ns:
                chosen = entry
                break
        if abs(stamp_ns - chosen[0]) > self.config.joints.max_age_ns:
            return None
        return chosen[1]

    def known_name_lists(self) -> int:
        """Distinct name lists whose index maps are cached (bounded by JOINT_INDEX_CACHE)."""
        return len(self._index)

    # -- resets ------------------------------------------------------------------------------------

    def forget_current(self) -> None:
        self.state = self.measured = self.stamp_ns = None

    def clear(self) -> None:
        """Another timeline (the clock jumped back): nothing held so far may be used."""
        self.forget_current()
        self._history.clear()
