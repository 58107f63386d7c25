"""DecodeThread: compressed camera frames decoded off the control thread, handed back in order.

Why: every callback of the node runs on one executor thread, the control timer's too, so a 2-3 ms
JPEG decode in an image callback would delay control ticks by as much. The subscription callback
only queues the message (microseconds); this thread decodes it (OpenCV releases the GIL while it
does) and calls ``notify`` -- in the node, a guard condition that wakes the executor, which then
takes the decoded frames with ``drain()`` on its own thread and gives them to the controller like
raw frames. The controller keeps its single owner; the decode never holds a tick.

The queue is bounded: when decoding falls behind (a CPU shared with inference), the oldest
undecoded frame is dropped and counted (likewise a decoded frame nobody has taken), so the backlog
-- and the age of what is decoded -- cannot grow. A frame that cannot be decoded comes back with an
ImageError, so the caller counts and logs it (throttled) and the camera simply has no frame, as
with a bad raw image.

No rclpy here: tests drive it with plain callables.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from lightwam_ros.ros.images import ImageError


@dataclass(frozen=True)
class DecodedFrame:
    camera: str
    topic: str
    stamp_ns: int
    rgb: np.ndarray | None  # None when ``error`` is set
    error: ImageError | None = None


@dataclass(frozen=True)
class _Pending:
    camera: str
    topic: str
    stamp_ns: int
    message: Any


class DecodeThread:
    """See the module doc. ``decode(message, camera, topic) -> rgb`` raises ImageError on bad data;
    ``notify()`` is called (from this thread) after each decoded frame is ready; ``capacity`` bounds
    the undecoded backlog."""

    def __init__(self, decode: Callable[[Any, str, str], np.ndarray], notify: Callable[[], None],
                 capacity: int = 8, name: str = "lightwam-decode") -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self._decode = decode
        self._notify = notify
        self._capacity = capacity
        self._lock = threading.Condition()
        self._pending: deque[_Pending] = deque()
        self._done: deque[DecodedFrame] = deque()
        self._closed = False
        # camera -> frames: decoded, failed to decode, dropped (backlog full; not yet taken)
        self.decoded: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()
        self._dropped: Counter[str] = Counter()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, message: Any, camera: str, topic: str, stamp_ns: int) -> None:
        """Queue one frame (called on the executor thread; never blocks on a decode)."""
        with self._lock:
            if self._closed:
                return
            if len(self._pending) >= self._capacity:
                old = self._pending.popleft()
                self._dropped[old.camera] += 1
            self._pending.append(_Pending(camera, topic, stamp_ns, message))
            self._lock.notify()

    def drain(self) -> list[DecodedFrame]:
        """Every frame decoded since the last call, in submission order."""
        with self._lock:
            out = list(self._done)
            self._done.clear()
        return out

    def take_dropped(self) -> Counter[str]:
        """camera -> frames dropped since the last call."""
        with self._lock:
            out, self._dropped = self._dropped, Counter()
        return out

    @property
    def backlog(self) -> int:
        with self._lock:
            return len(self._pending)

    def close(self, timeout_s: float = 2.0) -> None:
        with self._lock:
            self._closed = True
            self._pending.clear()
            self._lock.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout_s)

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._pending and not self._closed:
                    self._lock.wait()
                if self._closed:
                    return
                item = self._pending.popleft()
            try:
                rgb = self._decode(item.message, item.camera, item.topic)
                frame = DecodedFrame(item.camera, item.topic, item.stamp_ns, rgb)
            except ImageError as exc:
                frame = DecodedFrame(item.camera, item.topic, item.stamp_ns, None, exc)
            except Exception as exc:  # noqa: BLE001 - a decoder bug must not kill the thread and blind the camera
                frame = DecodedFrame(item.camera, item.topic, item.stamp_ns, None,
                                     ImageError(f"compressed image on '{item.topic}': {type(exc).__name__}: {exc}"))
            with self._lock:
                if self._closed:
                    return
                (self.failed if frame.error is not None else self.decoded)[item.camera] += 1
                if len(self._done) >= 4 * self._capacity:  # nobody drains: keep the newest frames only
                    self._dropped[self._done.popleft().camera] += 1
                self._done.append(frame)
            self._notify()
