"""Instruction -> context: prompt template/cleaning/key, official cache, bundle contexts, encode-text, online.

Reference values come from the official Light-WAM code (see test_umt5.py for how
test/data/umt5_tiny_golden.safetensors was made): the official tokenizer ids, `LightWAM.encode_prompt`
outputs, and two cache files in test/data/official_text_cache written by the official
`precompute_text_embeds._atomic_torch_save` (raw bf16 output with NON-zero padding rows, plus the mask;
like the official script they pickle the whole batch storage, 6 x 128 x 32, for one row).
The sha256 test vector is defined in docs/model.md, "Text contexts (umT5)".
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from lightwam_ros.bundle.official_text_cache import official_cache_path, read_official_text_cache
from lightwam_ros.text.contexts import TextContexts, UnknownInstructionError, add_contexts
from lightwam_ros.text.encode import read_instruction_file
from lightwam_ros.text.online import EncoderState, OnlineEncoderConfig, OnlineTextEncoder, TextStatus
from lightwam_ros.text.prompts import PROMPT_TEMPLATE, clean_prompt, format_prompt, prompt_key
from lightwam_ros.text.umt5 import T5_FILENAME, TOKENIZER_SUBDIR

DATA = Path(__file__).resolve().parents[1] / "data"
OFFICIAL_CACHE = DATA / "official_text_cache"
LIBERO_TASK = "pick up the black bowl between the plate and the ramekin and place it on the plate"
LIBERO_KEY = "01d238c02894e2ca0b32fa35ef3578ef9d3b15e67923d92a06070172088c9570"
BF16_EPS = 2.0**-8  # relative size of one bf16 rounding (8 significand bits): 3.9e-3

pytestmark = pytest.mark.numeric


@pytest.fixture(scope="module")
def golden() -> tuple[dict[str, torch.Tensor], dict[str, str], list[str]]:
    with safe_open(str(DATA / "umt5_tiny_golden.safetensors"), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        meta = f.metadata()
    return tensors, meta, json.loads(meta["instructions"])


@pytest.fixture
def bundle_dir(tmp_path) -> Path:
    """The tiny demo bundle (text_len 128, text_dim 32 = the golden umT5's d_model; fp32 contexts)."""
    from lightwam_ros.demo.tiny_bundle import write_demo_bundle

    write_demo_bundle(tmp_path / "bundle", "tiny", seed=0)
    return tmp_path / "bundle"


@pytest.fixture
def wan_dir(tmp_path, golden) -> Path:
    tensors, _, _ = golden
    wan = tmp_path / "Wan2.1-T2V-1.3B"
    (wan / TOKENIZER_SUBDIR).mkdir(parents=True)
    torch.save({k.removeprefix("wan."): v for k, v in tensors.items() if k.startswith("wan.")}, wan / T5_FILENAME)
    for p in (DATA / "umt5_tiny_tokenizer").iterdir():
        (wan / TOKENIZER_SUBDIR / p.name).write_bytes(p.read_bytes())
    return wan


def assert_encoded_like_official(ctx: torch.Tensor, golden, i: int) -> None:
    """A context umT5 computed HERE vs the official encode_prompt of prompt i (computed on another CPU).

    Copies and reads of official outputs are compared exactly; a fresh encoding is not: other CPU kernels
    sum in other orders, which can flip an intermediate bf16 rounding by one step (2**-8). As in
    test_umt5.py: within one step per layer plus one (relative L2, 1.6e-2 for the 3-layer golden model,
    measured <= 3.7e-3); padding rows are zeroed, not computed, so exactly 0; and a widened bf16 stays exact.
    """
    tensors, _, _ = golden
    expected, mask = tensors["ctx_bf16"][i].float(), tensors["mask"][i].bool()
    layers = len({k.split(".")[2] for k in tensors if k.startswith("wan.blocks.")})
    assert ctx.shape == expected.shape and (ctx[~mask] == 0).all()
    assert torch.equal(ctx.bfloat16().to(ctx.dtype), ctx)  # bf16 values (fp32 in a bundle: widened exactly)
    rel = float((ctx.float() - expected).norm() / expected.norm())
    assert rel <= (layers + 1) * BF16_EPS, f"prompt {i}: relative L2 {rel:.2e}"


def _files_verify(bundle_dir: Path) -> None:
    """Independent re-check: every file's sha256 equals the manifest, then the package's full verify."""
    from lightwam_ros.bundle.format import Bundle

    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    for name, digest in manifest["files"].items():
        assert hashlib.sha256((bundle_dir / name).read_bytes()).hexdigest() == digest, name
    Bundle.load(bundle_dir, verify=True)


# ------------------------------------------------------------------------------------------------
# template, cleaning, key


def test_template_is_the_official_default_prompt(golden):
    _, meta, _ = golden
    assert PROMPT_TEMPLATE == (
        "A video recorded from a robot's point of view executing the following instruction: {task}")
    assert meta["template"] == PROMPT_TEMPLATE  # DEFAULT_PROMPT read from the official module


def test_prompt_key_test_vector():
    assert prompt_key(LIBERO_TASK) == LIBERO_KEY
    assert official_cache_path("/c", LIBERO_TASK) == Path(f"/c/{LIBERO_KEY}.t5_len128.wan21t2v13b.pt")
    # the key is taken before cleaning: whitespace variants are different files (same embedding)
    assert prompt_key(LIBERO_TASK + " ") != LIBERO_KEY
    assert clean_prompt(format_prompt(LIBERO_TASK + " ")) == clean_prompt(format_prompt(LIBERO_TASK))


@pytest.mark.parametrize("raw, cleaned", [
    ("  pick up\tthe black   bowl\n\n", "pick up the black bowl"),
    ("plate &amp;amp; ramekin &lt;b&gt;", "plate & ramekin <b>"),  # unescaped twice
    ("a &amp;amp;amp; b", "a &amp; b"),  # ... and only twice
    ("café — naïve ü 物", "café — naïve ü 物"),  # unicode kept as is
    ("“curly” quotes and ﬁ ligature", "“curly” quotes and ﬁ ligature"),  # no ftfy (identity in training)
    ("a\u00a0b\u3000c\u2028d\u2009e", "a b c d e"),  # Unicode White_Space collapses
    ("\x1fa\x1cb\x1f", "a\x1cb"),  # U+001C..1F: stripped at the ends (str.strip), kept inside (regex \s)
    ("x&#32;&#32;y", "x y"),  # entities that decode to whitespace collapse too
])
def test_cleaning(raw, cleaned):
    assert clean_prompt(raw) == cleaned


# ------------------------------------------------------------------------------------------------
# official cache


def test_official_cache_file_from_the_official_script(golden):
    tensors, _, instructions = golden
    assert instructions[0] == LIBERO_TASK
    raw = torch.load(official_cache_path(OFFICIAL_CACHE, LIBERO_TASK), weights_only=True)
    mask = raw["mask"]
    assert raw["context"].dtype == torch.bfloat16 and (raw["context"][~mask].abs().sum(-1) > 0).all()
    for i in (0, 3):
        ctx = read_official_text_cache(OFFICIAL_CACHE, instructions[i])
        # exact: both made by the official code on the same CPU, and reading only zeroes the padding rows
        assert torch.equal(ctx, tensors["ctx_bf16"][i])  # = LightWAM.encode_prompt of the same prompt
        assert ctx.shape == (128, 32)


def test_official_cache_round_trip_zeroes_padding(tmp_path):
    g = torch.Generator().manual_seed(3)
    context = torch.randn(128, 24, generator=g).to(torch.bfloat16) + 1.0  # every row non-zero
    mask = torch.zeros(128, dtype=torch.bool)
    mask[:17] = True
    path = official_cache_path(tmp_path, "stack the cups")
    torch.save({"context": context, "mask": mask}, path)
    out = read_official_text_cache(tmp_path, "stack the cups")
    assert out.dtype == torch.bfloat16
    assert torch.equal(out[:17], context[:17])
    assert (out[17:] == 0).all()
    assert (context[17:] != 0).any()  # the caller's tensor is not modified


def test_official_cache_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="stack the cups"):
        read_official_text_cache(tmp_path, "stack the cups")
    torch.save({"context": torch.zeros(64, 8), "mask": torch.ones(64, dtype=torch.bool)},
               official_cache_path(tmp_path, "x"))
    with pytest.raises(ValueError, match=r"\[64, 8\]"):
        read_official_text_cache(tmp_path, "x")
    official_cache_path(tmp_path, "y").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a readable"):
        read_official_text_cache(tmp_path, "y")


# ------------------------------------------------------------------------------------------------
# bundle contexts


def test_text_contexts_lookup(bundle_dir):
    from lightwam_ros.demo.tiny_bundle import DEMO_INSTRUCTIONS, demo_contexts
    from lightwam_ros.model.config import MODEL_SIZES

    expected = demo_contexts(MODEL_SIZES["tiny"], 0, torch.float32)
    contexts = TextContexts(bundle_dir)
    assert contexts.instructions == sorted(DEMO_INSTRUCTIONS)
    for ins in DEMO_INSTRUCTIONS:  # exact: the bundle stored these very tensors (seeded, made in this process)
        assert torch.equal(contexts.get(ins), expected[ins])
    ins = "pick up the red block"
    # same cleaned prompt -> exactly the context umT5 would give: served
    for variant in (f"  {ins} \n", ins.replace(" ", "\t"), ins.replace(" ", "&#32;", 1)):
        assert variant in contexts and torch.equal(contexts.get(variant), expected[ins])
    with pytest.raises(UnknownInstructionError) as err:
        contexts.get("pick up the blue block")
    assert isinstance(err.value, KeyError)
    msg = str(err.value)
    assert msg.startswith("unknown instruction 'pick up the blue block'")
    assert all(repr(k) in msg for k in DEMO_INSTRUCTIONS) and "encode-text" in msg


def test_text_contexts_detects_a_changed_file(bundle_dir):
    from safetensors.torch import save_file

    from lightwam_ros.bundle.errors import BundleError

    save_file({prompt_key("pick up the red block"): torch.zeros(128, 32)},
              str(bundle_dir / "text_contexts.safetensors"))
    with pytest.raises(BundleError, match="sha256"):
        TextContexts(bundle_dir)


def test_add_contexts_keeps_the_bundle_valid(bundle_dir, golden):
    tensors, _, instructions = golden
    new = {instructions[0]: tensors["ctx_bf16"][0], instructions[3]: tensors["ctx_bf16"][3]}
    keys = add_contexts(bundle_dir, new)
    assert keys[LIBERO_TASK] == LIBERO_KEY
    _files_verify(bundle_dir)
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    assert manifest["text"]["instructions"][LIBERO_TASK] == LIBERO_KEY
    contexts = TextContexts(bundle_dir)
    assert len(contexts) == 6
    got = contexts.get(LIBERO_TASK)
    assert got.dtype == torch.float32  # stored like the bundle's existing (fp32) contexts; bf16 -> fp32 exact
    assert torch.equal(got, tensors["ctx_bf16"][0].float())  # a copy, widened: exact
    assert torch.equal(contexts.get("pick up the red block"), TextContexts(bundle_dir).get("pick up the red block"))
    with pytest.raises(ValueError, match="shape"):
        add_contexts(bundle_dir, {"x": torch.zeros(128, 16)})


# ------------------------------------------------------------------------------------------------
# lightwam encode-text


def test_encode_text_end_to_end(bundle_dir, wan_dir, golden, tmp_path, capsys):
    from lightwam_ros.cli import main

    _, _, instructions = golden
    listing = tmp_path / "instructions.txt"
    listing.write_text(f"# LIBERO\n{instructions[2]}\n\n{instructions[3]}\n", encoding="utf-8")
    rc = main(["encode-text", "--bundle", str(bundle_dir), "--wan-dir", str(wan_dir), "--instruction",
               instructions[0], "--file", str(listing), "--device", "cpu", "--batch-size", "2"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "[3/3]" in out and "s/instruction" in out and "peak RSS" in out
    _files_verify(bundle_dir)
    contexts = TextContexts(bundle_dir)
    for i in (0, 2, 3):  # the official encode_prompt (bf16) up to CPU kernels, stored as the bundle's fp32
        got = contexts.get(instructions[i])
        assert got.dtype == torch.float32
        assert_encoded_like_official(got, golden, i)

    rc = main(["encode-text", "--bundle", str(bundle_dir), "--wan-dir", str(wan_dir), "--instruction", instructions[0],
               "--instruction", instructions[5], "--device", "cpu"])
    out = capsys.readouterr().out
    assert rc == 0 and "skipped" in out and "fills all 128 tokens" in out and "added 1 contexts" in out


def test_encode_text_from_official_cache_and_errors(bundle_dir, golden, tmp_path, capsys):
    from lightwam_ros.cli import main

    tensors, _, _ = golden
    assert main(["encode-text", "--bundle", str(bundle_dir), "--official-cache", str(OFFICIAL_CACHE),
                 "--instruction", LIBERO_TASK]) == 0
    _files_verify(bundle_dir)
    # exact: the official cache file (official encode_prompt on the golden's CPU), padding zeroed, widened
    assert torch.equal(TextContexts(bundle_dir).get(LIBERO_TASK), tensors["ctx_bf16"][0].float())
    assert main(["encode-text", "--bundle", str(bundle_dir), "--wan-dir", str(tmp_path)]) == 2
    assert "--instruction or --file" in capsys.readouterr().err
    assert main(["encode-text", "--bundle", str(bundle_dir), "--wan-dir", str(tmp_path), "--instruction", "x"]) == 2
    assert T5_FILENAME in capsys.readouterr().err
    assert main(["encode-text", "--bundle", str(bundle_dir), "--file", str(tmp_path / "none.txt")]) == 2
    assert "none.txt" in capsys.readouterr().err


def test_read_instruction_file_keeps_lines_verbatim(tmp_path):
    p = tmp_path / "i.txt"
    p.write_text("pick up the cup \r\n# comment\n\n  stack it\n", encoding="utf-8")
    assert read_instruction_file(p) == ["pick up the cup ", "  stack it"]


# ------------------------------------------------------------------------------------------------
# online encoding


def test_online_encoder_cache_dir(bundle_dir, wan_dir, golden, tmp_path):
    _, _, instructions = golden
    cache = tmp_path / "text_cache"
    contexts = TextContexts(bundle_dir, cache_dir=cache)
    manifest_before = (bundle_dir / "manifest.json").read_bytes()
    enc = OnlineTextEncoder(contexts, OnlineEncoderConfig(str(wan_dir), cache_dir=str(cache)))
    try:
        assert enc.state is EncoderState.IDLE
        assert enc.request("pick up the red block") is TextStatus.READY  # in the bundle: no encoding
        assert enc.request(instructions[3]) is TextStatus.ENCODING
        assert enc.wait(instructions[3], timeout=120) is TextStatus.READY
        assert enc.state is EncoderState.READY
        encoded = contexts.get(instructions[3])
        assert encoded.dtype == torch.bfloat16
        assert_encoded_like_official(encoded, golden, 3)
        assert (cache / f"{prompt_key(instructions[3])}.safetensors").is_file()
        seconds = enc.last_encode_s
        assert enc.request(instructions[3]) is TextStatus.READY and enc.last_encode_s == seconds
        diag = enc.diagnostics()
        assert diag["text_encoder"] == "ready" and diag["text_encoded"] == "1" and diag["text_failed"] == "0"
    finally:
        enc.close()
    assert (bundle_dir / "manifest.json").read_bytes() == manifest_before
    # next start: served from the cache directory, no umT5
    again = TextContexts(bundle_dir, cache_dir=cache)
    assert torch.equal(again.get(instructions[3]), encoded)  # the file written above: exact
    with pytest.raises(UnknownInstructionError):
        TextContexts(bundle_dir).get(instructions[3])


def test_online_encoder_into_bundle(bundle_dir, wan_dir, golden):
    contexts = TextContexts(bundle_dir)
    enc = OnlineTextEncoder(contexts, OnlineEncoderConfig(str(wan_dir)), preload=True)
    try:
        deadline = time.monotonic() + 120
        while enc.state is not EncoderState.READY and time.monotonic() < deadline:
            time.sleep(0.05)
        assert enc.state is EncoderState.READY and enc.status(LIBERO_TASK) is None
        assert enc.wait(LIBERO_TASK, timeout=120) is TextStatus.READY
    finally:
        enc.close()
    _files_verify(bundle_dir)
    got = TextContexts(bundle_dir).get(LIBERO_TASK)
    assert got.dtype == torch.float32
    assert_encoded_like_official(got, golden, 0)


def test_online_encoder_failure_is_reported(bundle_dir, wan_dir):
    (wan_dir / T5_FILENAME).write_bytes(b"not a checkpoint")
    enc = OnlineTextEncoder(TextContexts(bundle_dir), OnlineEncoderConfig(str(wan_dir)))
    try:
        assert enc.wait("stack the cups", timeout=60) is TextStatus.FAILED
        assert T5_FILENAME in enc.error("stack the cups")
        assert enc.state is EncoderState.FAILED and T5_FILENAME in enc.diagnostics()["text_error"]
        assert enc.request("stack the cups") is TextStatus.FAILED  # sticky: no reload on every tick
    finally:
        enc.close()


def test_online_encoder_config_names_the_parameter(tmp_path):
    with pytest.raises(ValueError, match="text.wan_dir"):
        OnlineEncoderConfig("")
    with pytest.raises(ValueError, match="text.device"):
        OnlineEncoderConfig("/x", device="gpu")
    with pytest.raises(ValueError, match="text.dtype"):
        OnlineEncoderConfig("/x", dtype="float16")
    from lightwam_ros.text.umt5 import UMT5LoadError

    with pytest.raises(UMT5LoadError, match="text.wan_dir"):
        OnlineTextEncoder(None, OnlineEncoderConfig(str(tmp_path / "missing")))  # type: ignore[arg-type]
