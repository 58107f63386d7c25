"""umT5-XXL text encoder of Wan2.1, run through transformers' UMT5EncoderModel (docs/model.md, "Text contexts (umT5)").

Light-WAM conditions the DiT on the umT5-XXL encoder output of the templated instruction. The official
code ships its own T5 (`WanTextEncoder`); its maths is the same as transformers' `UMT5EncoderModel`
(per-layer relative bias, unscaled attention, fp32-variance RMSNorm, tanh-GELU gated FFN), so this
module only maps the Wan `.pth` key names onto the transformers ones and loads them without copying:

- `torch.load(mmap=True, weights_only=True)` maps the 11 GB bf16 file instead of reading it, and never
  unpickles code;
- the model is built on the meta device and `load_state_dict(assign=True)` adopts the mapped tensors,
  so at no point do two full copies of the weights exist in RAM. On CPU in bf16 the parameters stay
  file-backed (page cache); on CUDA they are copied to the GPU one tensor at a time.

Deliberate choices (each checked against the official code, see test/text/test_umt5.py):
- `UMT5EncoderModel`, never T5/MT5: those share one relative bias across layers and would silently
  compute something else.
- `attn_implementation="eager"`: bit-identical to the Wan attention in bf16 on CPU; SDPA differs at
  bf16-noise level (~2e-2 relative on random weights).
- the tied embedding (`shared` / `encoder.embed_tokens`) is one Parameter, so `.to(cuda)` moves it once.
- padding rows of the output are zeroed here and all 128 slots are kept (LightWAM.encode_prompt);
  the DiT sees every slot, so the context must never be shortened to the real tokens.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from lightwam_ros.model.dtypes import dtype_name, parse_dtype
from lightwam_ros.text.prompts import PROMPT_TEMPLATE, TEXT_LEN, clean_prompt, format_prompt

log = logging.getLogger(__name__)

T5_FILENAME = "models_t5_umt5-xxl-enc-bf16.pth"  # file name inside the Wan2.1-T2V-1.3B folder
TOKENIZER_SUBDIR = "google/umt5-xxl"  # tokenizer folder inside the Wan2.1-T2V-1.3B folder
REL_MAX_DISTANCE = 128  # T5RelativeEmbedding(max_dist=128) in the Wan code; not stored in the file

# The dtypes umT5 may run in (encode-text --dtype, OnlineEncoderConfig.dtype): bfloat16, as trained and
# as the official cache was made, or float32.
UMT5_DTYPES: tuple[str, ...] = ("bfloat16", "float32")

# Wan key (per block i) -> transformers UMT5EncoderModel key (docs/model.md, "Text contexts (umT5)"). All matrices are
# [out, in] on both sides, so nothing is transposed.
_BLOCK_KEYS: dict[str, str] = {
    "norm1.weight": "layer.0.layer_norm.weight",
    "attn.q.weight": "layer.0.SelfAttention.q.weight",
    "attn.k.weight": "layer.0.SelfAttention.k.weight",
    "attn.v.weight": "layer.0.SelfAttention.v.weight",
    "attn.o.weight": "layer.0.SelfAttention.o.weight",
    "pos_embedding.embedding.weight": "layer.0.SelfAttention.relative_attention_bias.weight",
    "norm2.weight": "layer.1.layer_norm.weight",
    "ffn.gate.0.weight": "layer.1.DenseReluDense.wi_0.weight",  # GELU branch
    "ffn.fc1.weight": "layer.1.DenseReluDense.wi_1.weight",  # linear branch
    "ffn.fc2.weight": "layer.1.DenseReluDense.wo.weight",
}
_BLOCK_RE = re.compile(r"^blocks\.(\d+)\.(.+)$")


class UMT5LoadError(RuntimeError):
    """The Wan T5 file or tokenizer folder is missing or does not match the umT5 layout; names the file."""


# ------------------------------------------------------------------------------------------------
# Key map and config


def wan_to_hf_key(key: str) -> list[str]:
    """transformers key(s) for one Wan key; the embedding maps to both tied names."""
    if key == "token_embedding.weight":
        return ["shared.weight", "encoder.embed_tokens.weight"]
    if key == "norm.weight":
        return ["encoder.final_layer_norm.weight"]
    m = _BLOCK_RE.match(key)
    if m and m.group(2) in _BLOCK_KEYS:
        return [f"encoder.block.{m.group(1)}.{_BLOCK_KEYS[m.group(2)]}"]
    raise KeyError(key)


def convert_wan_state_dict(wan_sd: Mapping[str, torch.Tensor], source: str = "state dict") -> dict[str, torch.Tensor]:
    """Wan `WanTextEncoder` state dict -> `UMT5EncoderModel` state dict (same tensors, no copies)."""
    out: dict[str, torch.Tensor] = {}
    unexpected = []
    for key, tensor in wan_sd.items():
        try:
            for hf_key in wan_to_hf_key(key):
                out[hf_key] = tensor
        except KeyError:
            unexpected.append(key)
    if unexpected:
        raise UMT5LoadError(
            f"{source}: {len(unexpected)} keys are not umT5 encoder keys (first: {sorted(unexpected)[:5]}); "
            f"expected the Wan file {T5_FILENAME}"
        )
    return out


def umt5_config_from_wan(wan_sd: Mapping[str, torch.Tensor], source: str = "state dict"):
    """UMT5Config read off the tensor shapes (so tiny test models and the real XXL load the same way).

    For the released file this gives vocab 256384, d_model 4096, 24 layers, 64 heads x 64, d_ff 10240,
    32 buckets — the values of the Wan2.1 Diffusers text_encoder/config.json.
    """
    from transformers import UMT5Config

    try:
        vocab, d_model = wan_sd["token_embedding.weight"].shape
        inner = wan_sd["blocks.0.attn.q.weight"].shape[0]
        num_buckets, num_heads = wan_sd["blocks.0.pos_embedding.embedding.weight"].shape
        d_ff = wan_sd["blocks.0.ffn.fc1.weight"].shape[0]
    except KeyError as exc:
        raise UMT5LoadError(f"{source}: missing {exc}; not a Wan umT5 encoder state dict") from None
    layers = {int(m.group(1)) for k in wan_sd if (m := _BLOCK_RE.match(k))}
    num_layers = len(layers)
    if layers != set(range(num_layers)):
        raise UMT5LoadError(f"{source}: block indices {sorted(layers)} are not 0..{num_layers - 1}")
    if inner % num_heads:
        raise UMT5LoadError(f"{source}: attention width {inner} is not a multiple of {num_heads} heads")
    return UMT5Config(
        vocab_size=int(vocab), d_model=int(d_model), d_kv=int(inner // num_heads), d_ff=int(d_ff),
        num_layers=int(num_layers), num_heads=int(num_heads),
        relative_attention_num_buckets=int(num_buckets), relative_attention_max_distance=REL_MAX_DISTANCE,
        feed_forward_proj="gated-gelu", layer_norm_epsilon=1e-6, dropout_rate=0.1,
        is_encoder_decoder=False, use_cache=False, attn_implementation="eager",
    )


# ------------------------------------------------------------------------------------------------
# Loading


def load_wan_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Memory-map the Wan `.pth` (weights_only: tensors and containers only, no code is unpickled)."""
    path = Path(path)
    if not path.is_file():
        raise UMT5LoadError(f"{path}: missing (expected the Wan2.1 umT5 file {T5_FILENAME})")
    try:
        sd = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or legacy-format files
        raise UMT5LoadError(f"{path}: cannot be loaded as a torch zip checkpoint ({exc})") from exc
    if not isinstance(sd, Mapping):
        raise UMT5LoadError(f"{path}: holds a {type(sd).__name__}, expected a flat dict of tensors")
    return dict(sd)


def build_umt5_encoder(
    wan_sd: Mapping[str, torch.Tensor],
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.bfloat16,
    source: str = "state dict",
):
    """UMT5EncoderModel holding the given Wan tensors (adopted, not copied), eval mode, on device/dtype."""
    from transformers import UMT5EncoderModel

    config = umt5_config_from_wan(wan_sd, source)
    hf_sd = convert_wan_state_dict(wan_sd, source)
    with torch.device("meta"):
        model = UMT5EncoderModel(config)
    result = model.load_state_dict(hf_sd, strict=False, assign=True)
    if result.missing_keys or result.unexpected_keys:
        raise UMT5LoadError(
            f"{source}: keys do not match UMT5EncoderModel ({config.num_layers} layers): "
            f"missing {result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}"
        )
    # assign=True gives each module its own Parameter; re-tie so the embedding moves/casts once.
    model.encoder.embed_tokens.weight = model.shared.weight
    model.eval().requires_grad_(False)
    model.to(device=device)  # device first: a bf16 file never goes through an fp32 copy on the host
    model.to(dtype=dtype)
    return model


def parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # parameters() yields the tied embedding once


# ------------------------------------------------------------------------------------------------
# Encoder


@dataclass(frozen=True)
class WanTextPaths:
    """Where the Wan2.1-T2V-1.3B folder keeps the umT5 weights and tokenizer."""

    wan_dir: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "wan_dir", Path(self.wan_dir).expanduser())

    @property
    def t5_file(self) -> Path:
        return self.wan_dir / T5_FILENAME

    @property
    def tokenizer_dir(self) -> Path:
        return self.wan_dir / TOKENIZER_SUBDIR

    def check(self, what: str = "wan_dir") -> None:
        """Raise UMT5LoadError naming the missing file; cheap (no loading)."""
        if not self.wan_dir.is_dir():
            raise UMT5LoadError(f"{what}: {self.wan_dir} is not a directory (expected the Wan2.1-T2V-1.3B folder)")
        if not self.t5_file.is_file():
            raise UMT5LoadError(f"{what}: {self.t5_file} is missing")
        if not (self.tokenizer_dir / "tokenizer.json").is_file():
            raise UMT5LoadError(f"{what}: {self.tokenizer_dir / 'tokenizer.json'} is missing")


def load_tokenizer(tokenizer_dir: str | Path):
    """AutoTokenizer of the Wan umT5 folder, as the official HuggingfaceTokenizer loads it (no options)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    if tokenizer.pad_token_id != 0 or tokenizer.eos_token_id != 1:
        raise UMT5LoadError(
            f"{tokenizer_dir}: pad/eos ids are {tokenizer.pad_token_id}/{tokenizer.eos_token_id}, "
            "expected 0/1 (T5 convention)"
        )
    return tokenizer


class UMT5TextEncoder:
    """Instruction -> [TEXT_LEN, d_model] context, exactly as LightWAM.encode_prompt (padding rows zero).

    Heavy: the real model holds 5.68B parameters (≈10.6 GiB in bf16) and costs ≈1.2 TFLOP per
    instruction. Load it on a workstation with `lightwam encode-text`, or in the node's background
    thread (text.encoder = umt5); never on the control path.
    """

    def __init__(self, model, tokenizer, *, max_length: int = TEXT_LEN, template: str = PROMPT_TEMPLATE) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = int(max_length)
        self.template = template
        if self.tokenizer_vocab_size > model.config.vocab_size:
            raise UMT5LoadError(
                f"tokenizer has {self.tokenizer_vocab_size} tokens but the T5 embedding only {model.config.vocab_size}"
            )

    @classmethod
    def from_wan_dir(
        cls, wan_dir: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | str = torch.bfloat16,
        **kwargs,
    ) -> UMT5TextEncoder:
        paths = WanTextPaths(Path(wan_dir))
        paths.check()
        if isinstance(dtype, str):
            if dtype not in UMT5_DTYPES:
                raise ValueError(f"dtype: {dtype!r} is not one of {sorted(UMT5_DTYPES)}")
            dtype = parse_dtype(dtype)
        t0 = time.monotonic()
        tokenizer = load_tokenizer(paths.tokenizer_dir)
        wan_sd = load_wan_state_dict(paths.t5_file)
        model = build_umt5_encoder(wan_sd, device, dtype, source=str(paths.t5_file))
        del wan_sd
        log.info("umT5 encoder loaded from %s: %.2fB parameters, %s on %s in %.1f s",
                 paths.t5_file, parameter_count(model) / 1e9, dtype_name(dtype), device,
                 time.monotonic() - t0)
        return cls(model, tokenizer, **kwargs)

    @property
    def tokenizer_vocab_size(self) -> int:
        return len(self.tokenizer)

    @property
    def device(self) -> torch.device:
        return self.model.shared.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.shared.weight.dtype

    @property
    def text_dim(self) -> int:
        return int(self.model.config.d_model)

    def tokenize(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Cleaned prompts -> (ids int64 [B, L], mask bool [B, L]); `</s>` appended, right padding with 0."""
        out = self.tokenizer(
            [clean_prompt(p) for p in prompts], return_tensors="pt", padding="max_length",
            truncation=True, max_length=self.max_length, add_special_tokens=True,
        )
        return out["input_ids"].to(torch.int64), out["attention_mask"].to(torch.bool)

    @torch.no_grad()
    def encode_prompts(self, prompts: Sequence[str]) -> torch.Tensor:
        """Templated prompts -> contexts [B, L, D] on CPU in the model dtype, rows past the tokens zeroed."""
        ids, mask = self.tokenize(prompts)  # [B, L], [B, L]
        hidden = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).last_hidden_state
        hidden = hidden.masked_fill(~mask.to(self.device)[..., None], 0.0)  # [B, L, D]; mask is a True prefix
        return hidden.to("cpu").contiguous()

    def encode(self, instructions: Sequence[str]) -> torch.Tensor:
        """Raw instructions -> contexts [B, L, D] (template applied, then the training-time cleaning)."""
        return self.encode_prompts([format_prompt(i, self.template) for i in instructions])
