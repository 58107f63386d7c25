"""The official training run's text cache (scripts/precompute_text_embeds.py), read like training did.

The converter reads it to put contexts into a new bundle (`lightwam convert --text-cache`) and the
text package to add them to an existing one (`lightwam encode-text --official-cache`). It lives with the
bundle because it is one of the official training outputs a bundle is built from, and so that the
converter needs nothing from the text package beyond the prompt definitions.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch

from lightwam_ros.text.prompts import PROMPT_TEMPLATE, TEXT_LEN, prompt_key

OFFICIAL_ENC_ID = "wan21t2v13b"  # _model_id_to_enc_id("Wan-AI/Wan2.1-T2V-1.3B")


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
