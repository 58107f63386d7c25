"""The precomputed instruction contexts of a bundle, served by instruction (docs/model.md, "Text contexts (umT5)").

The DiT cross-attends to 128 umT5-XXL tokens of the templated instruction. Running umT5 (5.7B
parameters, ≈10.6 GiB bf16) on the robot is rarely worth it, so a bundle carries the contexts of the
instructions it will be given (`text_contexts.safetensors`, key = prompts.prompt_key, padding rows
already zero). This module serves them to the pipeline (`TextContexts`, with an error that lists the
known instructions, since whoever reads it has to pick one or add it), and writes new ones: into the
bundle (`add_contexts`) or into a cache directory next to it (`write_cache_context`), which the robot
may write to when the bundle itself is read-only.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from lightwam_ros.bundle.errors import BundleError
from lightwam_ros.bundle.format import Bundle
from lightwam_ros.bundle.safetensors_io import (
    FLOAT_ST_DTYPES,
    TORCH_DTYPES,
    load_safetensors,
    read_safetensors_header,
    sha256_file,
)
from lightwam_ros.text.prompts import PROMPT_TEMPLATE, clean_prompt, format_prompt, prompt_key

log = logging.getLogger(__name__)

_CACHE_SUFFIX = ".safetensors"  # cache-dir files: <prompt_key>.safetensors


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


def as_bundle(source: Bundle | str | os.PathLike) -> Bundle:
    """Loaded without verify: hashing the multi-GB weights is not needed to read or add contexts, and
    TextContexts checks the one file it reads itself."""
    return source if isinstance(source, Bundle) else Bundle.load(source, verify=False)


class TextContexts:
    """Contexts of a bundle (plus an optional cache directory), looked up by instruction.

    Lookup order: the exact instruction in the manifest; the prompt key in the contexts file; then any
    known instruction whose *cleaned* prompt is identical (e.g. trailing whitespace from a topic): the
    tokenizer only sees the cleaned text, so that context is exactly the one umT5 would produce.
    Returned tensors are shared and must not be modified in place. Thread-safe.
    """

    def __init__(self, source: Bundle | str | os.PathLike, cache_dir: str | os.PathLike | None = None,
                 verify: bool = True) -> None:
        bundle = as_bundle(source)
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
            if sha256_file(path) != digest:
                raise BundleError(f"{path}: sha256 differs from the manifest "
                                  "(file changed after the bundle was written)")
        for key, t in load_safetensors(path).items():
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
    b = as_bundle(bundle)
    header = read_safetensors_header(b.contexts_path) if b.contexts_path.is_file() else {}
    stored = {dt for key, (_, dt) in header.items() if key in b.instructions.values()}
    only = stored.pop() if len(stored) == 1 else None
    dtype = TORCH_DTYPES[only] if only in FLOAT_ST_DTYPES else None
    prepared = {ins: t.detach().to("cpu", dtype or t.dtype) for ins, t in contexts.items()}
    b.add_text_contexts(prepared)
    return {ins: b.instructions[ins] for ins in prepared}
