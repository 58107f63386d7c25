"""Encoding unknown instructions on the robot, in a background thread, while the robot holds.

Optional (text.encoder: umt5); without it the robot knows only the contexts its bundle carries
(contexts.py). umT5 (≈10.6 GiB in bf16, ≈1.2 TFLOP per instruction) must not run on the control
path, so `OnlineTextEncoder.request` never blocks: the node asks again every tick and holds the robot
while the answer is ENCODING. The new context is stored (bundle or cache directory) so that the next
start needs no umT5.
"""

from __future__ import annotations

import enum
import logging
import queue
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from lightwam_ros.text.contexts import TextContexts, add_contexts, write_cache_context
from lightwam_ros.text.umt5 import UMT5_DTYPES, UMT5TextEncoder, WanTextPaths

log = logging.getLogger(__name__)


class TextStatus(enum.Enum):
    """Per-instruction state reported to the node (it holds the robot unless READY)."""

    READY = "ready"
    ENCODING = "encoding"
    FAILED = "failed"


class EncoderState(enum.Enum):
    """The umT5 model itself, for diagnostics."""

    IDLE = "idle"  # not loaded yet (loads on the first unknown instruction unless preloaded)
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"


_DEVICE_RE = re.compile(r"^(cpu|cuda(:\d+)?)$")


@dataclass(frozen=True)
class OnlineEncoderConfig:
    """The `text.*` node parameters for text.encoder = umt5."""

    wan_dir: str  # Wan2.1-T2V-1.3B folder (models_t5_umt5-xxl-enc-bf16.pth + google/umt5-xxl/)
    device: str = "cpu"  # cpu | cuda | cuda:N; on the GPU it takes ≈10.6 GiB next to the policy
    dtype: str = "bfloat16"  # bfloat16 (as trained) | float32 (CPU fp32 needs ≈22.7 GB of RAM)
    cache_dir: str = ""  # where new contexts are written; "" = into the bundle itself

    def __post_init__(self) -> None:
        if not str(self.wan_dir).strip():
            raise ValueError("text.wan_dir must name the Wan2.1-T2V-1.3B folder when text.encoder is umt5")
        if not _DEVICE_RE.match(self.device):
            raise ValueError(f"text.device: {self.device!r}, expected cpu, cuda or cuda:N")
        if self.dtype not in UMT5_DTYPES:
            raise ValueError(f"text.dtype: {self.dtype!r}, expected {' or '.join(UMT5_DTYPES)}")


_LOAD_ONLY = object()
_STOP = object()


class OnlineTextEncoder:
    """Encode unknown instructions with umT5 in a background thread; the robot holds meanwhile.

    `request(instruction)` never blocks: READY when a context exists, otherwise the instruction is queued
    and ENCODING is returned until the worker has encoded it, stored it (bundle or cache_dir) and added
    it to `contexts`; then READY. Errors are sticky (FAILED, see `error()`): the node reports them rather
    than retrying a 10 GB load on every tick. The model is loaded on the first unknown instruction, or
    right away with `preload=True`, and stays loaded.
    """

    def __init__(self, contexts: TextContexts, config: OnlineEncoderConfig, *, preload: bool = False) -> None:
        WanTextPaths(Path(config.wan_dir)).check("text.wan_dir")  # fail at configure time, not on the robot
        self.contexts = contexts
        self.config = config
        self._encoder = None
        self._state = EncoderState.IDLE
        self._load_error: str | None = None
        self._status: dict[str, TextStatus] = {}
        self._errors: dict[str, str] = {}
        self._cond = threading.Condition()
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self.last_encode_s: float | None = None
        self.load_s: float | None = None
        if preload:
            self._start()
            self._queue.put(_LOAD_ONLY)

    # -- API for the node ----------------------------------------------------------------------

    def request(self, instruction: str) -> TextStatus:
        if instruction in self.contexts:
            return TextStatus.READY
        with self._cond:
            status = self._status.get(instruction)
            if status is not None:
                return status
            self._status[instruction] = TextStatus.ENCODING
        self._start()
        self._queue.put(instruction)
        log.info("instruction %r has no context: encoding it with umT5 on %s (robot holds)",
                 instruction, self.config.device)
        return TextStatus.ENCODING

    def status(self, instruction: str) -> TextStatus | None:
        """READY / ENCODING / FAILED, or None if never requested and unknown."""
        if instruction in self.contexts:
            return TextStatus.READY
        with self._cond:
            return self._status.get(instruction)

    def error(self, instruction: str) -> str | None:
        with self._cond:
            return self._errors.get(instruction)

    def wait(self, instruction: str, timeout: float | None = None) -> TextStatus:
        """Block until the instruction is no longer ENCODING (requests it first)."""
        status = self.request(instruction)
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._status.get(instruction) is TextStatus.ENCODING:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._cond.wait(left)
            return self._status.get(instruction, status)

    @property
    def state(self) -> EncoderState:
        with self._cond:
            return self._state

    def diagnostics(self) -> dict[str, str]:
        """Key/values for the node's /diagnostics status."""
        with self._cond:
            counts = {s: sum(1 for v in self._status.values() if v is s) for s in TextStatus}
            out = {
                "text_encoder": self._state.value,
                "text_device": self.config.device,
                "text_encoding": str(counts[TextStatus.ENCODING]),
                "text_encoded": str(counts[TextStatus.READY]),
                "text_failed": str(counts[TextStatus.FAILED]),
            }
            if self.load_s is not None:
                out["text_load_s"] = f"{self.load_s:.1f}"
            if self.last_encode_s is not None:
                out["text_last_encode_s"] = f"{self.last_encode_s:.2f}"
            if self._load_error:
                out["text_error"] = self._load_error
            return out

    def close(self, timeout: float = 10.0) -> None:
        """Stop the worker (an encode in progress finishes first) and drop the model."""
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(timeout)
            self._thread = None
        self._encoder = None
        if self.config.device.startswith("cuda") and torch.cuda.is_available():
            torch.cuda.empty_cache()

    # -- worker --------------------------------------------------------------------------------

    def _start(self) -> None:
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="lightwam-umt5", daemon=True)
                self._thread.start()

    def _set(self, instruction: str, status: TextStatus, error: str | None = None) -> None:
        with self._cond:
            self._status[instruction] = status
            if error is not None:
                self._errors[instruction] = error
            self._cond.notify_all()

    def _load(self) -> None:
        with self._cond:
            if self._encoder is not None or self._state is EncoderState.FAILED:
                return
            self._state = EncoderState.LOADING
        t0 = time.monotonic()
        try:
            encoder = UMT5TextEncoder.from_wan_dir(
                self.config.wan_dir, self.config.device, self.config.dtype, template=self.contexts.template
            )
            if (encoder.max_length, encoder.text_dim) != self.contexts.shape:
                raise ValueError(
                    f"text.wan_dir {self.config.wan_dir}: umT5 gives [{encoder.max_length}, {encoder.text_dim}] "
                    f"contexts but the bundle needs {list(self.contexts.shape)}"
                )
        except Exception as exc:  # noqa: BLE001 - recorded as FAILED, reported to whoever waits
            with self._cond:
                self._state, self._load_error = EncoderState.FAILED, f"{type(exc).__name__}: {exc}"
                self._cond.notify_all()
            log.error("umT5 text encoder failed to load: %s", exc)
            return
        with self._cond:
            self._encoder, self._state, self.load_s = encoder, EncoderState.READY, time.monotonic() - t0

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            self._load()
            if item is _LOAD_ONLY:
                continue
            instruction: str = item
            if self._encoder is None:
                self._set(instruction, TextStatus.FAILED, f"umT5 not loaded: {self._load_error}")
                continue
            try:
                t0 = time.monotonic()
                context = self._encoder.encode([instruction])[0]
                self.last_encode_s = time.monotonic() - t0
                self.contexts.add(instruction, context)
            except Exception as exc:  # noqa: BLE001 - this instruction FAILED; the worker goes on
                log.error("encoding instruction %r failed: %s", instruction, exc)
                self._set(instruction, TextStatus.FAILED, f"{type(exc).__name__}: {exc}")
                continue
            self._persist(instruction, context)
            log.info("instruction %r encoded in %.2f s", instruction, self.last_encode_s)
            self._set(instruction, TextStatus.READY)

    def _persist(self, instruction: str, context: torch.Tensor) -> None:
        """Store the new context so the next start needs no umT5; a read-only bundle only warns."""
        try:
            if self.config.cache_dir:
                write_cache_context(self.config.cache_dir, instruction, context, self.contexts.template,
                                    encoder=f"umt5 {self.config.dtype} {self.config.device}")
            else:
                add_contexts(self.contexts.bundle_dir, {instruction: context})
        except OSError as exc:
            log.warning("context for %r is served from memory only; storing it failed: %s", instruction, exc)
