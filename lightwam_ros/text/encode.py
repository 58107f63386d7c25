"""Filling a bundle with instruction contexts on a workstation (`lightwam encode-text`).

Either umT5 encodes them (`encode_into_bundle`, a `umt5.UMT5TextEncoder`: a GPU helps, ≈1.2 TFLOP
per instruction) or they are copied from the official training cache (`import_official_cache`, no
umT5 needed); either way the bundle gets them through contexts.add_contexts and still verifies, and
the robot then needs no text encoder.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from lightwam_ros.bundle.format import Bundle
from lightwam_ros.bundle.official_text_cache import read_official_text_cache
from lightwam_ros.text.contexts import add_contexts, as_bundle
from lightwam_ros.text.prompts import format_prompt


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
    b = as_bundle(bundle)
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
    b = as_bundle(bundle)
    contexts = {ins: read_official_text_cache(cache_dir, ins, template=b.text_template,
                                              context_len=b.model_config.text_len)
                for ins in dict.fromkeys(instructions)}
    return add_contexts(b, contexts)
