"""umT5 encoder (transformers UMT5EncoderModel + Wan key map) against the official Light-WAM code.

Golden data, test/data/umt5_tiny_golden.safetensors, was produced OUTSIDE this repo by running the
official Light-WAM implementation (one fixed revision) on a tiny random umT5 (vocab 256, d_model 32,
4 heads, d_ff 64, 3 layers, 32 buckets, max_distance 128; official init_weights, seed 20240611, norm
weights perturbed, linears x4, then cast to bf16 like the released .pth):
- `wan.*`: the `WanTextEncoder` state dict (Wan key names, bf16);
- `ids`, `mask`: `HuggingfaceTokenizer(test/data/umt5_tiny_tokenizer, seq_len=128, clean="whitespace")`
  on `DEFAULT_PROMPT.format(task=...)` for the instructions in the file's metadata (whitespace, HTML
  entities incl. double escaping, unicode, U+001C/U+00A0/U+3000/U+2028, and one longer than 128 tokens);
- `raw_fp32`: `WanTextEncoder(ids, mask)` in fp32 (weights upcast from bf16), before any zeroing;
- `ctx_fp32`, `ctx_bf16`: `LightWAM.encode_prompt` (padding rows zeroed) on the whole batch;
  `ctx1_bf16`: the same one prompt at a time (the online path).
The scratch script also checked that `precompute_text_embeds` + `_get_cached_text_context` + the
dataset's zeroing give exactly `ctx_bf16` (files in test/data/official_text_cache, see test_text.py).
The tiny tokenizer (test/data/umt5_tiny_tokenizer) is a `tokenizers` Unigram model built offline with
T5 conventions (pad 0, eos 1, unk 2, Metaspace, `$A </s>` post-processor), since the real umT5
tokenizer cannot be downloaded here; AutoTokenizer loads it as the T5 tokenizer.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from lightwam_ros.text.prompts import format_prompt
from lightwam_ros.text.umt5 import (
    T5_FILENAME,
    TOKENIZER_SUBDIR,
    UMT5LoadError,
    UMT5TextEncoder,
    WanTextPaths,
    build_umt5_encoder,
    convert_wan_state_dict,
    load_tokenizer,
    umt5_config_from_wan,
    wan_to_hf_key,
)

pytestmark = pytest.mark.numeric

DATA = Path(__file__).resolve().parents[1] / "data"
GOLDEN = DATA / "umt5_tiny_golden.safetensors"
TOKENIZER = DATA / "umt5_tiny_tokenizer"

# The golden outputs were computed on another CPU. CPU kernels (AVX-512, AVX2, baseline) sum in
# different orders, so only the token ids are exact; float results get a bound from the dtype's
# rounding step and the length of the sums (a wrong or swapped weight gives O(1) relative error).
FP32_EPS = torch.finfo(torch.float32).eps  # 1.2e-7
BF16_EPS = 2.0**-8  # relative size of one bf16 rounding (8 significand bits): 3.9e-3


@pytest.fixture(scope="module")
def golden() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], list[str]]:
    with safe_open(str(GOLDEN), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        meta = f.metadata()
    wan = {k.removeprefix("wan."): v for k, v in tensors.items() if k.startswith("wan.")}
    return wan, tensors, json.loads(meta["instructions"])


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(TOKENIZER)


def _wan_dir(tmp_path: Path, wan_sd: dict[str, torch.Tensor]) -> Path:
    """A miniature Wan2.1 folder: the T5 .pth (torch.save, like the release) and the tokenizer folder."""
    wan = tmp_path / "Wan2.1-T2V-1.3B"
    (wan / TOKENIZER_SUBDIR).mkdir(parents=True)
    torch.save(wan_sd, wan / T5_FILENAME)
    for p in TOKENIZER.iterdir():
        (wan / TOKENIZER_SUBDIR / p.name).write_bytes(p.read_bytes())
    return wan


def assert_fp32_close(actual: torch.Tensor, expected: torch.Tensor, d_ff: int) -> None:
    """A reordered fp32 dot product of length K moves by at most ~K * eps of its terms' size; K = d_ff is
    the longest sum here (64 * 1.2e-7 * max|out| = 3.5e-5; measured <= 5e-6, a 1% weight error gives 5e-2)."""
    atol = d_ff * FP32_EPS * float(expected.abs().max())
    torch.testing.assert_close(actual, expected, rtol=0, atol=atol)


def assert_bf16_matches_official(ctx: torch.Tensor, expected: torch.Tensor, mask: torch.Tensor,
                                 num_layers: int) -> None:
    """Each prompt's context within (num_layers + 1) bf16 rounding steps (relative L2) of the golden.

    Another accumulation order can flip an intermediate bf16 rounding by one step (2**-8); allowing one
    such step per layer and one for the final norm gives 4 * 3.9e-3 = 1.6e-2 for the 3-layer golden model
    (measured <= 3.7e-3, on AVX2), below the 4e-2 that bf16 is from fp32 and far below the O(1) of a
    wrong weight map. The padding rows are zeroed, not computed: exactly 0 on any CPU.
    """
    assert ctx.dtype == expected.dtype == torch.bfloat16 and ctx.shape == expected.shape
    assert (ctx[~mask] == 0).all()
    tol = (num_layers + 1) * BF16_EPS
    for i, (a, e) in enumerate(zip(ctx.float(), expected.float())):
        rel = float((a - e).norm() / e.norm())
        assert rel <= tol, f"prompt {i}: relative L2 {rel:.2e} > {tol:.2e}"


# ------------------------------------------------------------------------------------------------
# key map and config


def test_key_map_matches_spec_table():
    assert wan_to_hf_key("token_embedding.weight") == ["shared.weight", "encoder.embed_tokens.weight"]
    assert wan_to_hf_key("norm.weight") == ["encoder.final_layer_norm.weight"]
    expected = {
        "blocks.7.norm1.weight": "encoder.block.7.layer.0.layer_norm.weight",
        "blocks.7.attn.q.weight": "encoder.block.7.layer.0.SelfAttention.q.weight",
        "blocks.7.attn.o.weight": "encoder.block.7.layer.0.SelfAttention.o.weight",
        "blocks.23.pos_embedding.embedding.weight":
            "encoder.block.23.layer.0.SelfAttention.relative_attention_bias.weight",
        "blocks.7.norm2.weight": "encoder.block.7.layer.1.layer_norm.weight",
        "blocks.7.ffn.gate.0.weight": "encoder.block.7.layer.1.DenseReluDense.wi_0.weight",
        "blocks.7.ffn.fc1.weight": "encoder.block.7.layer.1.DenseReluDense.wi_1.weight",
        "blocks.7.ffn.fc2.weight": "encoder.block.7.layer.1.DenseReluDense.wo.weight",
    }
    for wan, hf in expected.items():
        assert wan_to_hf_key(wan) == [hf]
    with pytest.raises(KeyError):
        wan_to_hf_key("blocks.0.attn.qkv.weight")


def _real_size_wan_meta() -> dict[str, torch.Tensor]:
    """Shapes of models_t5_umt5-xxl-enc-bf16.pth (docs/model.md, "Text contexts (umT5)"), on the meta device."""
    m = lambda *s: torch.empty(*s, device="meta", dtype=torch.bfloat16)  # noqa: E731
    sd = {"token_embedding.weight": m(256384, 4096), "norm.weight": m(4096)}
    for i in range(24):
        sd |= {f"blocks.{i}.norm1.weight": m(4096), f"blocks.{i}.norm2.weight": m(4096),
               f"blocks.{i}.pos_embedding.embedding.weight": m(32, 64),
               f"blocks.{i}.ffn.gate.0.weight": m(10240, 4096), f"blocks.{i}.ffn.fc1.weight": m(10240, 4096),
               f"blocks.{i}.ffn.fc2.weight": m(4096, 10240)}
        sd |= {f"blocks.{i}.attn.{p}.weight": m(4096, 4096) for p in "qkvo"}
    return sd


def test_real_size_config_and_strict_key_set():
    from transformers import UMT5EncoderModel

    wan = _real_size_wan_meta()
    assert len(wan) == 242
    cfg = umt5_config_from_wan(wan)
    assert (cfg.vocab_size, cfg.d_model, cfg.d_kv, cfg.d_ff, cfg.num_layers, cfg.num_heads) == (
        256384, 4096, 64, 10240, 24, 64)
    assert (cfg.relative_attention_num_buckets, cfg.relative_attention_max_distance) == (32, 128)
    assert cfg.dense_act_fn == "gelu_new" and cfg.is_gated_act and cfg.layer_norm_epsilon == 1e-6
    with torch.device("meta"):
        model = UMT5EncoderModel(cfg)
    hf = convert_wan_state_dict(wan)
    assert set(hf) == set(model.state_dict()) and len(hf) == 243
    for k, t in hf.items():
        assert tuple(t.shape) == tuple(model.state_dict()[k].shape), k
    model.encoder.embed_tokens.weight = model.shared.weight
    assert sum(p.numel() for p in model.parameters()) == 5_680_910_336  # docs/model.md, "Parameter counts"


def test_foreign_keys_are_named(golden):
    wan, _, _ = golden
    with pytest.raises(UMT5LoadError, match="blocks.0.attn.qkv.weight"):
        convert_wan_state_dict({**wan, "blocks.0.attn.qkv.weight": torch.zeros(1)}, "x.pth")
    broken = {k: v for k, v in wan.items() if k != "blocks.1.ffn.fc2.weight"}
    with pytest.raises(UMT5LoadError, match="wo.weight"):
        build_umt5_encoder(broken, source="x.pth")


# ------------------------------------------------------------------------------------------------
# parity with the official code


def test_tokenizer_ids_match_official(golden, tokenizer):
    wan, g, instructions = golden
    enc = UMT5TextEncoder(build_umt5_encoder(wan, dtype=torch.float32), tokenizer)
    ids, mask = enc.tokenize([format_prompt(i) for i in instructions])
    assert ids.dtype == torch.int64 and mask.dtype == torch.bool
    assert torch.equal(ids, g["ids"])
    assert torch.equal(mask, g["mask"].bool())


def test_tokenizer_padding_and_truncation(golden, tokenizer):
    wan, g, instructions = golden
    enc = UMT5TextEncoder(build_umt5_encoder(wan, dtype=torch.float32), tokenizer)
    long = "pick up the bowl " * 60
    ids, mask = enc.tokenize([format_prompt(instructions[0]), format_prompt(long)])
    assert ids.shape == (2, 128)
    n = int(mask[0].sum())
    assert mask[0, :n].all() and not mask[0, n:].any()  # a True prefix
    assert ids[0, n - 1] == 1 and (ids[0, n:] == 0).all() and (ids[0, : n - 1] > 1).all()  # text, </s>, pads
    assert mask[1].all() and ids[1, 127] == 1 and (ids[1, :127] > 1).all()  # 127 text tokens + </s>
    assert (ids == 2).sum() == 0  # every test word is in the tiny vocabulary (no <unk>)


def test_fp32_matches_official(golden, tokenizer):
    wan, g, instructions = golden
    model = build_umt5_encoder(wan, dtype=torch.float32)
    with torch.no_grad():
        raw = model(input_ids=g["ids"], attention_mask=g["mask"].bool()).last_hidden_state
    assert raw.dtype == torch.float32
    d_ff = model.config.d_ff
    assert_fp32_close(raw, g["raw_fp32"], d_ff)  # padded query rows included
    ctx = UMT5TextEncoder(model, tokenizer).encode(instructions)
    assert_fp32_close(ctx, g["ctx_fp32"], d_ff)
    assert (ctx[~g["mask"].bool()] == 0).all()  # zeroed, not computed: exact


def test_bf16_eager_matches_official(golden, tokenizer):
    """Bit-identical on the CPU that made the golden; within bf16 rounding on the others."""
    wan, g, instructions = golden
    enc = UMT5TextEncoder(build_umt5_encoder(wan, dtype=torch.bfloat16), tokenizer)
    assert enc.model.config._attn_implementation == "eager"  # noqa: SLF001 - the transformers config field
    mask, layers = g["mask"].bool(), enc.model.config.num_layers
    ctx = enc.encode(instructions)
    assert_bf16_matches_official(ctx, g["ctx_bf16"], mask, layers)
    one_by_one = torch.stack([enc.encode([i])[0] for i in instructions])
    assert_bf16_matches_official(one_by_one, g["ctx1_bf16"], mask, layers)


def test_padding_rows_zero_and_all_slots_kept(golden, tokenizer):
    wan, g, instructions = golden
    enc = UMT5TextEncoder(build_umt5_encoder(wan, dtype=torch.float32), tokenizer)
    ctx = enc.encode(instructions)
    mask = g["mask"].bool()
    assert ctx.shape == (len(instructions), 128, 32)
    assert (ctx[~mask] == 0).all()
    assert (ctx[mask].abs().sum(-1) > 0).all()
    assert (g["raw_fp32"][~mask].abs().sum(-1) > 0).all()  # the raw encoder output is not zero there


# ------------------------------------------------------------------------------------------------
# loading from a Wan folder


def test_from_wan_dir_memory_maps_and_adopts(tmp_path, golden):
    wan, g, instructions = golden
    wan_dir = _wan_dir(tmp_path, wan)
    enc = UMT5TextEncoder.from_wan_dir(wan_dir, "cpu", "bfloat16")
    assert_bf16_matches_official(enc.encode(instructions), g["ctx_bf16"], g["mask"].bool(), enc.model.config.num_layers)
    assert enc.model.shared.weight is enc.model.encoder.embed_tokens.weight  # tied: moved/cast once
    assert not enc.model.training and not any(p.requires_grad for p in enc.model.parameters())

    # No copy: with bf16 on CPU the parameters ARE the memory-mapped tensors from torch.load.
    from lightwam_ros.text.umt5 import load_wan_state_dict

    mapped = load_wan_state_dict(wan_dir / T5_FILENAME)
    model = build_umt5_encoder(mapped, "cpu", torch.bfloat16)
    assert model.shared.weight.data_ptr() == mapped["token_embedding.weight"].data_ptr()
    assert model.encoder.block[2].layer[1].DenseReluDense.wo.weight.data_ptr() == \
        mapped["blocks.2.ffn.fc2.weight"].data_ptr()


def test_missing_files_are_named(tmp_path, golden):
    with pytest.raises(UMT5LoadError, match="not a directory"):
        WanTextPaths(tmp_path / "nope").check()
    (tmp_path / "w").mkdir()
    with pytest.raises(UMT5LoadError, match=T5_FILENAME):
        UMT5TextEncoder.from_wan_dir(tmp_path / "w")
    wan_dir = _wan_dir(tmp_path, golden[0])
    (wan_dir / TOKENIZER_SUBDIR / "tokenizer.json").unlink()
    with pytest.raises(UMT5LoadError, match="tokenizer.json"):
        UMT5TextEncoder.from_wan_dir(wan_dir)
    with pytest.raises(ValueError, match="dtype"):
        UMT5TextEncoder.from_wan_dir(_wan_dir(tmp_path / "b", golden[0]), dtype="float16")


def test_not_a_checkpoint(tmp_path, golden):
    wan_dir = _wan_dir(tmp_path, golden[0])
    (wan_dir / T5_FILENAME).write_bytes(b"not a zip")
    with pytest.raises(UMT5LoadError, match=T5_FILENAME):
        UMT5TextEncoder.from_wan_dir(wan_dir)
