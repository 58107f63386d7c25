"""ThrottledLogger: the controller's logger interface (rclpy's) on top of Python logging.

Why: the controller reports through ``error / warning / info(msg, throttle_duration_sec=...)``,
which is what an rclpy logger offers in the node. Offline replay and the command-line tools log
through Python's logging instead, which has no throttling; without it a bag with a bad camera
would print one error per frame. Throttling is keyed by level and message text and timed on the
monotonic clock, as rclpy times it on the wall clock (a replay runs faster than real time, so a
period here covers more bag time than it would on a robot).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

MAX_KEYS = 1024  # distinct throttled messages remembered (bounded: message texts carry numbers)


class ThrottledLogger:
    """rclpy-logger-like methods over ``logger``; ``monotonic`` is injectable for tests."""

    def __init__(self, logger: logging.Logger, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._logger = logger
        self._monotonic = monotonic
        self._last: dict[tuple[int, str], float] = {}

    def _log(self, level: int, message: str, throttle_duration_sec: float = 0.0, **_: Any) -> bool:
        if throttle_duration_sec:
            key = (level, message)
            now = self._monotonic()
            last = self._last.get(key)
            if last is not None and now - last < throttle_duration_sec:
                return False
            if len(self._last) >= MAX_KEYS:
                self._last.clear()
            self._last[key] = now
        self._logger.log(level, message)
        return True

    def debug(self, message: str, **kwargs: Any) -> bool:
        return self._log(logging.DEBUG, message, **kwargs)

    def info(self, message: str, **kwargs: Any) -> bool:
        return self._log(logging.INFO, message, **kwargs)

    def warning(self, message: str, **kwargs: Any) -> bool:
        return self._log(logging.WARNING, message, **kwargs)

    def error(self, message: str, **kwargs: Any) -> bool:
        return self._log(logging.ERROR, message, **kwargs)
