"""Instruction -> umT5 text context, exactly as Light-WAM was trained (docs/model.md, "Text contexts (umT5)").

The DiT cross-attends to 128 umT5-XXL tokens of the templated instruction. Running umT5 (5.7B
parameters, ≈10.6 GiB bf16) on the robot is rarely worth it, so a bundle carries the contexts of the
instructions it will be given (`text_contexts.safetensors`, key = sha256 of the templated prompt,
padding rows already zero). This module:

- formats and cleans prompts the way training did (`format_prompt`, `clean_prompt`, `prompt_key`);
- reads the official training cache (`read_official_text_cache`) and post-processes it like the
  training dataset (padding rows zeroed, all 128 slots kept);
- serves contexts to the node (`TextContexts`), with an error listing the known instructions;
- adds contexts to a bundle (`add_contexts`, used by `lightwam encode-text`);
- optionally encodes unknown instructions on the robot in a background thread (`OnlineTextEncoder`)
  while the robot holds.

Cleaning (official `HuggingfaceTokenizer(clean="whitespace")`): `html.unescape` twice, strip, every run of
Unicode whitespace -> one space, strip. The official code would call `ftfy.fix_text` first, but ftfy is
not among the reference environment's pinned dependencies, so its import fell back to an identity
function: the released models were trained WITHOUT ftfy, and this module does not apply it either.
The whitespace class is the Unicode White_Space set that the `regex` package's `\\s` matches (the
reference env has `regex` through transformers); Python's `re` would also match U+001C..U+001F.
"""

from __future__ import annotations

import enum
import hashlib
import html
import logging
import os
import queue
import re
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from lightwam_ros.bundle.format import Bundle

log = logging.getLogger(__name__)

# robot_video_dataset.py DEFAULT_PROMPT: ASCII apostrophe, one space after the colon, raw {task}.
PROMPT_TEMPLATE = "A video recorded from a robot's point of view executing the following instruction: {task}"
TEXT_LEN = 128  # tokenizer_max_len = context_len
OFFICIAL_ENC_ID = "wan21t2v13b"  # _model_id_to_enc_id("Wan-AI/Wan2.1-T2V-1.3B")

# `regex`'s \s (Unicode White_Space): what the reference collapsed.
_WHITESPACE = re.compile(r"[\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+")
_CACHE_SUFFIX = ".safetensors"  # cache-dir files: <prompt_key>.safetensors
_ST_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}


# ------------------------------------------------------------------------------------------------
# Prompt


def format_prompt(instruction: str, template: str = PROMPT_TEMPLATE) -> str:
    """The templated prompt; the instruction is inserted raw (not stripped), as in training."""
    return template.format(task=instruction)


def clean_prompt(text: str) -> str:
    """The tokenizer-side cleaning of the official text encoder (no ftfy, see module docstring)."""
    text = html.unescape(html.unescape(text)).strip()
    return _WHITESPACE.sub(" ", text).strip()


def prompt_key(instruction: str, template: str = PROMPT_TEMPLATE) -> str:
    """sha256 hex of the UTF-8 templated prompt, before cleaning: the official cache file stem."""
    return hashlib.sha256(format_prompt(instruction, template).encode("utf-8")).hexdigest()


# ------------------------------------------------------------------------------------------------
# Official cache (scripts/precompute_text_embeds.py)


def official_cache_path(
    cache_dir: str | os.PathLike, instruction: str, *, template: str = PROMPT_TEMPLATE,
    context_len: int = TEXT_LEN, enc_id: str = OFFICIAL_ENC_ID,
) -> Path:
    """`<cache_dir>/<sha256(prompt)>.t5_len<context_len>.<enc_id>.pt`, the official file name."""
    return Path(cache_dir) / f"{prompt_key(instruction, template)}.t5_len{context_len}.{enc_id}.pt"


def read_official_text_cache(
    cache_dir: str | os.PathLike, instruction: str, *, template: str = PROMPT_TEMPLATE,
    context_len: int = TEXT_LEN, enc_id: str = OFFICIAL_ENC_ID,
) -> torch.Tensor:
    """One official cache entry -> context [context_len, D], padding rows zeroed (dtype as stored).

    The file is a torch.save pickle {"context": bf16 [L, D] raw encoder output, "mask": bool [L]}; it is
    read with weights_only=True (tensors only, no code). As the training dataset does, rows where the
    mask is False are set to zero and all L slots are kept (the model attends to all of them).
    """
    path = official_cache_path(cache_dir, instruction, template=template, context_len=context_len, enc_id=enc_id)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no official text cache for instruction {instruction!r} "
            "(scripts/precompute_text_embeds.py writes these; or encode it with `lightwam encode-text`)"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in several types
        raise ValueError(f"{path}: not a readable official text cache ({exc})") from exc
    if not isinstance(payload, Mapping) or "context" not in payload or "mask" not in payload:
        raise ValueError(f"{path}: expected a dict with 'context' and 'mask'")
    context, mask = payload["context"], payload["mask"].bool()
    if context.ndim != 2 or context.shape[0] != context_len:
        raise ValueError(f"{path}: 'context' has shape {list(context.shape)}, expected [{context_len}, D]")
    if tuple(mask.shape) != (context_len,):
        raise ValueError(f"{path}: 'mask' has shape {list(mask.shape)}, expected [{context_len}]")
    context = context.clone()
    context[~mask] = 0  # _get: context[~context_mask] = 0.0 (the mask then becomes all True)
    return context.contiguous()


# ------------------------------------------------------------------------------------------------
# Contexts of a bundle


class UnknownInstructionError(KeyError):
    """No context for this instruction; the message lists the known ones (the robot holds)."""

    def __init__(self, instruction: str, known: Iterable[str], where: str, limit: int = 20) -> None:
        self.instruction = instruction
        self.known = sorted(known)
        shown = "\n".join(f"  - {k!r}" for k in self.known[:limit])
        more = f"\n  ... and {len(self.known) - limit} more" if len(self.known) > limit else ""
        self.message = (
            f"unknown instruction {instruction!r}: {where} has no text context for it. "
            f"Known instructions ({len(self.known)}):\n{shown or '  (none)'}{more}\n"
            "Add it on a workstation with `lightwam encode-text --bundle <dir> --wan-dir <Wan2.1-T2V-1.3B> "
            "--instruction ...`, or enable online encoding (text.encoder: umt5)."
        )
        super().__init__(self.message)

    def __str__(self) -> str:  # KeyError would print the message quoted on one line
        return self.message


def _as_bundle(source: Bundle | str | os.PathLike) -> Bundle:
    from lightwam_ros.bundle.format import Bundle

    return source if isinstance(source, Bundle) else Bundle.load(source, verify=False)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class TextContexts:
    """Contexts of a bundle (plus an optional cache directory), looked up by instruction.

    Lookup order: the exact instruction in the manifest; the prompt key in the contexts file; then any
    known instruction whose *cleaned* prompt is identical (e.g. trailing whitespace from a topic): the
    tokenizer only sees the cleaned text, so that context is exactly the one umT5 would produce.
    Returned tensors are shared and must not be modified in place. Thread-safe.
    """

    def __init__(self, source: Bundle | str | os.PathLike, cache_dir: str | os.PathLike | None = None,
                 verify: bool = True) -> None:
        from lightwam_ros.bundle.format import BundleError

        bundle = _as_bundle(source)
        self.bundle_dir = Path(bundle.path)
        self.template: str = bundle.text_template
        self.shape = (int(bundle.model_config.text_len), int(bundle.model_config.text_dim))
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self._lock = threading.Lock()
        self._by_key: dict[str, torch.Tensor] = {}
        self._instructions: dict[str, str] = {}  # instruction -> key
        self._by_clean: dict[str, str] = {}  # cleaned prompt -> key
        path = bundle.contexts_path
        if verify:
            digest = bundle.files.get(bundle.contexts_file)
            if digest is None:
                raise BundleError(f"{self.bundle_dir / 'manifest.json'}: 'files' has no sha256 "
                                  f"for {bundle.contexts_file}")
            if _sha256(path) != digest:
                raise BundleError(f"{path}: sha256 differs from the manifest "
                                  "(file changed after the bundle was written)")
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():
                t = f.get_tensor(key)
                if tuple(t.shape) != self.shape:
                    raise BundleError(f"{path}: context {key} has shape {list(t.shape)}, expected {list(self.shape)}")
                self._by_key[key] = t
        for instruction, key in bundle.instructions.items():
            if key not in self._by_key:
                raise BundleError(f"{path}: no context {key} for instruction {instruction!r} "
                                  "(manifest text.instructions)")
            self._index(instruction, key)
        if self.cache_dir is not None and self.cache_dir.is_dir():
            for p in sorted(self.cache_dir.glob("*" + _CACHE_SUFFIX)):
                self._load_cache_file(p)

    # -- lookup ----------------------------------------------------------------------------------

    @property
    def instructions(self) -> list[str]:
        with self._lock:
            return sorted(self._instructions)

    def __len__(self) -> int:
        with self._lock:
            return len(self._instructions)

    def __contains__(self, instruction: object) -> bool:
        return isinstance(instruction, str) and self.find_key(instruction) is not None

    def find_key(self, instruction: str) -> str | None:
        with self._lock:
            key = self._instructions.get(instruction)
            if key is None:
                key = prompt_key(instruction, self.template)
                if key not in self._by_key:
                    key = self._by_clean.get(clean_prompt(format_prompt(instruction, self.template)))
            return key

    def get(self, instruction: str) -> torch.Tensor:
        """Context [text_len, text_dim] (CPU, stored dtype, padding rows zero) or UnknownInstructionError."""
        key = self.find_key(instruction)
        if key is None:
            raise UnknownInstructionError(instruction, self.instructions, f"bundle {self.bundle_dir}")
        with self._lock:
            return self._by_key[key]

    # -- adding ----------------------------------------------------------------------------------

    def add(self, instruction: str, context: torch.Tensor) -> str:
        """Serve a new context from memory (persisting it is the caller's job); returns its key."""
        key = prompt_key(instruction, self.template)
        context = self._checked(context.detach().to("cpu").contiguous(), f"context for {instruction!r}")
        with self._lock:
            self._by_key[key] = context
            self._index(instruction, key)
        return key

    def _index(self, instruction: str, key: str) -> None:
        self._instructions[instruction] = key
        self._by_clean.setdefault(clean_prompt(format_prompt(instruction, self.template)), key)

    def _checked(self, t: torch.Tensor, where: str) -> torch.Tensor:
        if tuple(t.shape) != self.shape:
            raise ValueError(f"{where}: shape {list(t.shape)}, expected {list(self.shape)} (model text_len, text_dim)")
        return t

    def _load_cache_file(self, path: Path) -> None:
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                tensor = f.get_tensor("context")
        except Exception as exc:  # noqa: BLE001 - a half-written or foreign file must not stop the robot
            log.warning("text cache %s ignored: %s", path, exc)
            return
        instruction = meta.get("instruction")
        if instruction is None or meta.get("template") != self.template or tuple(tensor.shape) != self.shape:
            log.warning("text cache %s ignored: other template/shape than bundle %s", path, self.bundle_dir)
            return
        if path.name != prompt_key(instruction, self.template) + _CACHE_SUFFIX:
            log.warning("text cache %s ignored: file name is not the prompt key of %r", path, instruction)
            return
        self.add(instruction, tensor)


def write_cache_context(cache_dir: str | os.PathLike, instruction: str, context: torch.Tensor,
                        template: str = PROMPT_TEMPLATE, encoder: str = "") -> Path:
    """One context in a cache directory: `<prompt_key>.safetensors` (tensor "context", atomic write)."""
    from safetensors.torch import save_file

    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / (prompt_key(instruction, template) + _CACHE_SUFFIX)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    save_file({"context": context.detach().to("cpu").contiguous()}, str(tmp),
              metadata={"instruction": instruction, "template": template, "encoder": encoder})
    os.replace(tmp, path)
    return path


def add_contexts(bundle: Bundle | str | os.PathLike, contexts: Mapping[str, torch.Tensor]) -> dict[str, str]:
    """Add or replace instruction contexts in a bundle; returns {instruction: key}.

    Rewrites text_contexts.safetensors atomically and updates the manifest's text.instructions and the
    file's sha256, so the bundle still verifies. New contexts are stored in the dtype of the ones already
    there (bf16 for converted bundles, as the official cache), so the file stays uniform.
    """
    from lightwam_ros.bundle.format import read_safetensors_header

    b = _as_bundle(bundle)
    header = read_safetensors_header(b.contexts_path) if b.contexts_path.is_file() else {}
    stored = {dt for key, (_, dt) in header.items() if key in b.instructions.values()}
    dtype = _ST_DTYPES.get(stored.pop()) if len(stored) == 1 else None
    prepared = {ins: t.detach().to("cpu", dtype or t.dtype) for ins, t in contexts.items()}
    b.add_text_contexts(prepared)
    return {ins: b.instructions[ins] for ins in prepared}


@dataclass(frozen=True)
class EncodeReport:
    """What `encode_into_bundle` did (printed by `lightwam encode-text`)."""

    added: tuple[str, ...]  # instructions whose contexts were written
    skipped: tuple[str, ...]  # already in the bundle (no --overwrite)
    seconds_per_instruction: float  # umT5 time only, amortised over batches
    truncated: tuple[str, ...]  # fill all 128 slots: 127+ tokens, anything past 127 is cut (as in training)


def read_instruction_file(path: str | os.PathLike) -> list[str]:
    """One instruction per line, kept verbatim (only the line ending is removed); blank and # lines skipped."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise FileNotFoundError(f"--file {path}: {exc.strerror or exc}") from exc
    return [line for line in lines if line.strip() and not line.lstrip().startswith("#")]


def encode_into_bundle(
    bundle: Bundle | str | os.PathLike, instructions: Iterable[str], encoder, *, batch_size: int = 8,
    overwrite: bool = False, progress=None,
) -> EncodeReport:
    """Encode instructions with a `umt5.UMT5TextEncoder` and add them to the bundle (then it re-verifies).

    `progress(done, total, instruction, seconds_per_instruction)` is called after each batch. Contexts are
    written once at the end, so an interrupted run leaves the bundle untouched.
    """
    if batch_size <= 0:
        raise ValueError(f"--batch-size must be > 0, got {batch_size}")
    b = _as_bundle(bundle)
    shape = (b.model_config.text_len, b.model_config.text_dim)
    if (encoder.max_length, encoder.text_dim) != shape:
        raise ValueError(
            f"the umT5 encoder gives [{encoder.max_length}, {encoder.text_dim}] contexts, but bundle {b.path} "
            f"needs {list(shape)} (model text_len, text_dim): wrong --wan-dir for this bundle?"
        )
    if encoder.template != b.text_template:
        raise ValueError(f"encoder template {encoder.template!r} differs from bundle {b.path} text.template")
    todo, skipped = [], []
    for ins in dict.fromkeys(instructions):  # de-duplicated, order kept
        (skipped if ins in b.instructions and not overwrite else todo).append(ins)
    contexts: dict[str, torch.Tensor] = {}
    truncated: list[str] = []
    spent = 0.0
    for start in range(0, len(todo), batch_size):
        batch = todo[start:start + batch_size]
        prompts = [format_prompt(i, b.text_template) for i in batch]
        _, mask = encoder.tokenize(prompts)
        truncated += [i for i, m in zip(batch, mask) if bool(m.all())]
        t0 = time.monotonic()
        out = encoder.encode_prompts(prompts)
        spent += time.monotonic() - t0
        contexts.update(zip(batch, out))
        if progress is not None:
            progress(len(contexts), len(todo), batch[-1], spent / len(contexts))
    if contexts:
        add_contexts(b, contexts)
    return EncodeReport(tuple(contexts), tuple(skipped), spent / max(len(contexts), 1), tuple(truncated))


def import_official_cache(bundle: Bundle | str | os.PathLike, instructions: Iterable[str],
                          cache_dir: str | os.PathLike) -> dict[str, str]:
    """Add contexts from an official training cache (no umT5 needed); returns {instruction: key}."""
    b = _as_bundle(bundle)
    contexts = {ins: read_official_text_cache(cache_dir, ins, template=b.text_template,
                                              context_len=b.model_config.text_len)
                for ins in dict.fromkeys(instructions)}
    return add_contexts(b, contexts)


# ------------------------------------------------------------------------------------------------
# Online encoding on the robot (optional)


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
        if self.dtype not in ("bfloat16", "float32"):
            raise ValueError(f"text.dtype: {self.dtype!r}, expected bfloat16 or float32")


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
        from lightwam_ros.text.umt5 import WanTextPaths

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
        from lightwam_ros.text.umt5 import UMT5TextEncoder

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
