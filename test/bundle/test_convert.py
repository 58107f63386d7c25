"""`lightwam convert` on official-format training outputs built from the official golden model.

The official artifacts are assembled here exactly as the official code writes them
(docs/model.md, "Checkpoint conversion" and "Text contexts (umT5)"), from the tensors of
test/data/golden_tiny_policy.safetensors (a tiny model run through the OFFICIAL implementation, see
test_model_fidelity.py):
- step_XXXXXX.pt: torch.save({"mot", "state_fusion_action_expert", "proprio_encoder", "step",
  "torch_dtype"}) with `mixtures.video.` keys, including the blocks after the last adapter and the
  DiT head (both must be dropped), bf16;
- config.yaml: a resolved training config shaped like configs/model/lightwam.yaml +
  configs/data/robotwin.yaml, with the 5B numbers in video_dit_config that the wan2_1_t2v preset
  overrides (here a tiny preset stands in for the 1.3B one);
- dataset_stats.json with global_* and stepwise_* statistics;
- Wan2.1_VAE.pth: flat dict with 5-D encoder kernels, time_conv, decoder.* and conv2.*;
- the official text cache (test/data/official_text_cache, written by the official script: raw bf16
  contexts with non-zero padding rows + mask).
The converted bundle must reproduce the official golden actions and predict exactly what the source
model predicts; malformed inputs must fail with messages naming the offending key.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors import safe_open

from lightwam_ros import cli
from lightwam_ros.bundle import convert as convert_mod
from lightwam_ros.bundle.convert import BackboneSpec, ConvertError, ConvertRequest, convert
from lightwam_ros.bundle.format import Bundle
from lightwam_ros.bundle.safetensors_io import read_safetensors_header
from lightwam_ros.inference.backends.torch_backend import load_policy
from lightwam_ros.inference.layouts import Preprocessor
from lightwam_ros.inference.pipeline import PolicyPipeline
from lightwam_ros.model.canvas_layout import LAYOUTS
from lightwam_ros.model.config import MODEL_SIZES, ModelConfig
from lightwam_ros.model.normalization import Normalizer
from lightwam_ros.model.policy import LightWAMPolicy

DATA = Path(__file__).resolve().parents[1] / "data"
GOLDEN = DATA / "golden_tiny_policy.safetensors"
OFFICIAL_CACHE = DATA / "official_text_cache"
LIBERO_TASK = "pick up the black bowl between the plate and the ramekin and place it on the plate"
LIBERO_KEY = "01d238c02894e2ca0b32fa35ef3578ef9d3b15e67923d92a06070172088c9570"
CFG = MODEL_SIZES["tiny"]

pytestmark = pytest.mark.numeric

# The tiny stand-in for the wan2_1_t2v preset (the real one forces the 1.3B dims).
TINY_BACKBONES = {
    "wan2_1_t2v": BackboneSpec(
        dit_overrides={"hidden_dim": CFG.dim, "in_dim": 16, "ffn_dim": CFG.ffn_dim, "out_dim": 16,
                       "patch_size": [1, 2, 2], "num_heads": CFG.num_heads, "attn_head_dim": CFG.head_dim,
                       "num_layers": CFG.num_layers, "text_dim": CFG.text_dim, "freq_dim": CFG.freq_dim, "eps": 1e-6},
        vae=CFG.vae,
    )
}

MEAN = [0.0, -0.45, 0.65, 0.0, 0.35, 0.0, 0.6] * 2
STD = [0.25, 0.3, 0.3, 0.2, 0.3, 0.25, 0.35] * 2


# -- official artifacts -----------------------------------------------------------------------------


def golden_tensors() -> dict[str, torch.Tensor]:
    with safe_open(str(GOLDEN), "pt") as f:
        assert ModelConfig.from_dict(json.loads(f.metadata()["model"])) == CFG
        return {k: f.get_tensor(k) for k in f.keys()}


def official_checkpoint(g: dict[str, torch.Tensor]) -> dict:
    w = {k.removeprefix("weights."): v for k, v in g.items() if k.startswith("weights.")}
    mot = {f"mixtures.video.{k.removeprefix('dit.')}": v for k, v in w.items() if k.startswith("dit.")}
    gen = torch.Generator().manual_seed(7)
    last = CFG.run_layers - 1
    for i in range(CFG.run_layers, CFG.num_layers):  # blocks the action path never runs
        for k, v in list(mot.items()):
            if k.startswith(f"mixtures.video.blocks.{last}."):
                mot[k.replace(f"blocks.{last}.", f"blocks.{i}.")] = torch.randn(v.shape, generator=gen).to(v.dtype)
    out_dim = 16 * 4  # out_dim * prod(patch_size): the future-video head
    mot["mixtures.video.head.head.weight"] = torch.randn(out_dim, CFG.dim, generator=gen).bfloat16()
    mot["mixtures.video.head.head.bias"] = torch.zeros(out_dim).bfloat16()
    mot["mixtures.video.head.modulation"] = torch.randn(1, 2, CFG.dim, generator=gen).bfloat16()
    return {
        "mot": mot,
        "state_fusion_action_expert": {k.removeprefix("expert."): v for k, v in w.items() if k.startswith("expert.")},
        "proprio_encoder": {k.removeprefix("proprio_encoder."): v for k, v in w.items()
                            if k.startswith("proprio_encoder.")},
        "step": 12000,
        "torch_dtype": "torch.bfloat16",
    }


def official_vae(g: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Flat Wan2.1_VAE.pth layout: encoder (5-D kernels, time_conv), conv1, decoder.*, conv2.*, fp32."""
    vae = {k.removeprefix("weights.vae."): v.float() for k, v in g.items() if k.startswith("weights.vae.")}
    assert vae["encoder.conv1.weight"].dim() == 5 and "encoder.downsamples.5.time_conv.weight" in vae
    gen = torch.Generator().manual_seed(8)
    z, top = 16, CFG.vae.dim * CFG.vae.dim_mult[-1]
    vae["decoder.conv1.weight"] = torch.randn(top, z, 3, 3, 3, generator=gen)
    vae["decoder.conv1.bias"] = torch.zeros(top)
    vae["decoder.head.0.gamma"] = torch.ones(CFG.vae.dim, 1, 1, 1)
    vae["decoder.head.2.weight"] = torch.randn(3, CFG.vae.dim, 3, 3, 3, generator=gen)
    vae["conv2.weight"] = torch.randn(z, z, 1, 1, 1, generator=gen)
    vae["conv2.bias"] = torch.zeros(z)
    return vae


def official_config() -> dict:
    images = [{"key": k, "raw_shape": [3, 480, 640], "shape": [3, 240, 320]}
              for k in ("cam_high", "cam_left_wrist", "cam_right_wrist")]
    processor = {
        "_target_": "lightwam.datasets.lerobot.processors.lightwam_processor.LightWAMProcessor",
        "shape_meta": {"images": images, "action": [{"key": "default", "raw_shape": 14, "shape": 14}],
                       "state": [{"key": "default", "raw_shape": 14, "shape": 14}]},
        "num_obs_steps": 33, "num_output_cameras": 3, "action_output_dim": 14, "proprio_output_dim": 14,
        "action_state_transforms": None, "use_stepwise_action_norm": False, "norm_default_mode": "z-score",
        "norm_exception_mode": None,
        "val_transforms": [{"_target_": "lightwam.datasets.lerobot.transforms.image.ToTensor"},
                           {"_target_": "torchvision.transforms.Resize", "size": [240, 320]}],
    }
    train = {
        "_target_": "lightwam.datasets.lerobot.robot_video_dataset.RobotVideoDataset",
        "shape_meta": processor["shape_meta"], "num_frames": 33, "action_video_freq_ratio": 4,
        "video_size": [384, 320], "concat_multi_camera": "robotwin", "processor": processor,
        "text_embedding_cache_dir": "./data/text_embeds_cache/robotwin", "context_len": 128,
    }
    model = {
        "_target_": "lightwam.runtime.create_lightwam",
        "model_id": "Wan-AI/Wan2.1-T2V-1.3B", "video_backbone_type": "wan2_1_t2v",
        "tokenizer_max_len": 128, "load_text_encoder": False, "proprio_dim": 14,
        "wam_adapter": {
            "use_wam_adapter": True, "freeze_backbone": True, "remove_original_action_expert": True,
            "adapter_layer_indices": list(CFG.adapter_layers), "adapter_dim": CFG.adapter_dim, "adapter_scale": 1.0,
            "use_backbone_lora": True, "lora_layer_indices": list(range(CFG.num_layers)),
            "lora_target_modules": list(CFG.lora_targets), "lora_rank": CFG.lora_rank,
            "lora_alpha": CFG.lora_alpha, "lora_dropout": 0.0,
        },
        "state_fusion_action_expert_config": {
            "per_layer_dim": CFG.expert.per_layer_dim, "trunk_dim": CFG.expert.trunk_dim, "num_trunk_blocks": 1,
            "step_pos_dim": CFG.expert.step_pos_dim, "token_pooling_type": "learned_query",
            "token_pooling_num_queries": CFG.expert.num_queries,
            "token_pooling_num_heads": CFG.expert.num_pool_heads, "token_pooling_merge_dim": None,
            "token_pooling_merge_num_slots": 2, "feature_sources": ["adapted"], "layer_feature_sources": None,
        },
        # As in the released yaml: the 5B numbers, overridden by the backbone preset.
        "video_dit_config": {"has_image_input": False, "patch_size": [1, 2, 2], "in_dim": 48, "hidden_dim": 3072,
                             "ffn_dim": 14336, "freq_dim": 256, "text_dim": 4096, "out_dim": 48, "num_heads": 24,
                             "attn_head_dim": 128, "num_layers": 30, "eps": 1e-6, "seperated_timestep": True,
                             "action_dim": 14},
        "loss": {"lambda_action": 1.0, "action_temporal_weighting": {
            "enabled": True, "num_prefix_steps": 24, "prefix_weight": 1.0, "tail_weight": 0.0}},
    }
    return {"model": model, "data": {"train": train, "val": train}, "batch_size": 16, "mixed_precision": "bf16",
            "output_dir": "./runs/lightwam_robotwin_3cam384_1e-4/x"}


def official_stats(action_dim: int = 14) -> dict:
    def leaf(mean: list[float], std: list[float]) -> dict:
        m, s = np.asarray(mean), np.asarray(std)
        return {"global_mean": m.tolist(), "global_std": s.tolist(), "global_min": (m - 3 * s).tolist(),
                "global_max": (m + 3 * s).tolist(), "global_q01": (m - 2.3 * s).tolist(),
                "global_q99": (m + 2.3 * s).tolist(), "stepwise_mean": [m.tolist()] * 33,
                "stepwise_std": [s.tolist()] * 33}

    return {"action": {"default": leaf(MEAN[:action_dim], STD[:action_dim])}, "state": {"default": leaf(MEAN, STD)},
            "num_episodes": 50, "num_transition": 12345}


@pytest.fixture(scope="module")
def golden() -> dict[str, torch.Tensor]:
    return golden_tensors()


@pytest.fixture(scope="module")
def official(tmp_path_factory: pytest.TempPathFactory, golden) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("official_run")
    (d / "checkpoints" / "weights").mkdir(parents=True)
    paths = {"ckpt": d / "checkpoints" / "weights" / "step_012000.pt", "config": d / "config.yaml",
             "stats": d / "dataset_stats.json", "vae": d / "Wan2.1_VAE.pth"}
    torch.save(official_checkpoint(golden), paths["ckpt"])
    torch.save(official_vae(golden), paths["vae"])
    paths["config"].write_text(yaml.safe_dump(official_config(), sort_keys=False))
    paths["stats"].write_text(json.dumps(official_stats()))
    return paths


def request(official: dict[str, Path], out: Path, **kw) -> ConvertRequest:
    args = dict(official)
    args.update(kw)
    return ConvertRequest(out=out, **args)


@pytest.fixture(scope="module")
def converted(official, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("converted") / "bundle"
    convert(request(official, out, text_cache=OFFICIAL_CACHE, instructions=(LIBERO_TASK,)), TINY_BACKBONES)
    return out


# -- success path ------------------------------------------------------------------------------------


def test_converted_bundle_metadata(converted: Path) -> None:
    b = Bundle.load(converted)
    assert b.model_config == CFG  # yaml 5B dims overridden by the preset; expert/adapter/LoRA from the yaml
    emb = b.embodiment
    assert emb.trained_steps == 24 and b.model_config.horizon == 32
    assert emb.layout == LAYOUTS["robotwin_3cam"]
    assert emb.action_names[0] == "left_waist" and emb.action_names[13] == "right_gripper"
    assert emb.normalization["mode"] == "z-score"
    np.testing.assert_allclose(emb.normalization["action"]["mean"], MEAN, rtol=1e-6)
    assert emb.action_rate_hz is None
    assert b.manifest["source"]["converted_from"]["ckpt"]["step"] == 12000
    # Only what inference runs: no head, no block after the last adapter, 2-D VAE, no decoder/time_conv.
    dit = read_safetensors_header(converted / "dit.safetensors")
    assert not any(k.startswith(("head.", f"blocks.{CFG.run_layers}.")) for k in dit)
    assert {s for s, dt in dit.values()} and all(dt == "BF16" for _, dt in dit.values())
    vae = read_safetensors_header(converted / "vae_encoder.safetensors")
    assert vae["encoder.conv1.weight"][0] == (8, 3, 3, 3)
    assert vae["encoder.downsamples.0.residual.0.gamma"][0] == (8, 1, 1)
    assert not any("time_conv" in k or k.startswith(("decoder.", "conv2.")) for k in vae)


def test_converted_weights_reproduce_official_golden(converted: Path, golden) -> None:
    """The bundle's network on the golden inputs gives the official implementation's actions."""
    b = Bundle.load(converted)
    policy = load_policy(b, torch.device("cpu"), torch.float32, merge_lora=False)
    with torch.no_grad():
        actions = policy(golden["input.canvas"], golden["input.proprio"], golden["input.context"])
    ref = golden["float32.actions"]
    # golden from another CPU: float32 relative L2 within ~100 rounding steps, as in test_model_fidelity.py
    assert float((actions - ref).norm() / ref.norm()) < 1e-5


def test_official_text_cache_padding_zeroed(converted: Path) -> None:
    raw = torch.load(OFFICIAL_CACHE / f"{LIBERO_KEY}.t5_len128.wan21t2v13b.pt", weights_only=True)
    mask = raw["mask"]
    assert (raw["context"][~mask].float().abs().sum(-1) > 0).all()  # the raw cache has non-zero padding
    expected = raw["context"].clone()
    expected[~mask] = 0
    b = Bundle.load(converted)
    assert b.instructions == {LIBERO_TASK: LIBERO_KEY}
    assert torch.equal(b.load_contexts()[LIBERO_TASK], expected)  # copied and zeroed, not computed: exact


def test_converted_bundle_predicts_like_the_source_model(converted: Path, official, golden) -> None:
    """End to end (preprocess, normalize, merged LoRA, de-normalize) vs the source model by hand."""
    rng = np.random.default_rng(5)
    images = {c: rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for c in LAYOUTS["robotwin_3cam"].cameras}
    state = np.asarray(MEAN) + rng.normal(0, 0.2, 14)
    with PolicyPipeline.from_bundle(converted, device="cpu") as pipe:
        chunk = pipe.predict(images, state, LIBERO_TASK, stamp_ns=123)
    # Reference: the official tensors loaded into LightWAMPolicy directly (unmerged LoRA, 5-D VAE kernels).
    source = LightWAMPolicy(CFG)
    source.load_state_dict({k.removeprefix("weights."): v.float() for k, v in golden.items()
                            if k.startswith("weights.")}, strict=True)
    source.eval()
    norm = Normalizer.from_dataset_stats(json.loads(official["stats"].read_text()), "z-score")
    raw = torch.load(OFFICIAL_CACHE / f"{LIBERO_KEY}.t5_len128.wan21t2v13b.pt", weights_only=True)
    ctx = raw["context"].float()
    ctx[~raw["mask"]] = 0
    with torch.no_grad():
        out = source(Preprocessor(LAYOUTS["robotwin_3cam"])(images),
                     torch.from_numpy(norm.normalize_state(state)).unsqueeze(0), ctx.unsqueeze(0))
    expected = norm.denormalize_actions(out[0].numpy())
    assert chunk.actions.shape == (32, 14) and chunk.stamp_ns == 123 and chunk.trained_steps == 24
    # same CPU and weights, but merged vs unmerged LoRA (rounds differently, ~1e-6): 1e-4 at an action scale ~1
    np.testing.assert_allclose(chunk.actions, expected, atol=1e-4, rtol=0)
    assert np.abs(expected - np.asarray(MEAN)).max() > 1e-2  # not trivially the mean


def test_convert_cli(official, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setitem(convert_mod.BACKBONES, "wan2_1_t2v", TINY_BACKBONES["wan2_1_t2v"])
    out = tmp_path / "cli_bundle"
    rc = cli.main(["convert", "--ckpt", str(official["ckpt"]), "--config", str(official["config"]),
                   "--stats", str(official["stats"]), "--vae", str(official["vae"]), "--out", str(out),
                   "--action-rate-hz", "25", "--dtype", "float32"])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "wrote bundle" in text and "dit.safetensors" in text and "sha256" in text
    b = Bundle.load(out)
    assert b.embodiment.action_rate_hz == 25.0 and b.instructions == {}
    assert read_safetensors_header(out / "expert.safetensors")["output.2.weight"][1] == "F32"
    with PolicyPipeline.from_bundle(out, device="cpu") as pipe:  # no instructions yet: warm-up still runs
        assert pipe.known_instructions == [] and pipe.warmup(1) > 0

    rc = cli.main(["convert", "--ckpt", str(official["ckpt"]), "--config", str(official["config"]),
                   "--stats", str(official["stats"]), "--vae", str(official["vae"]), "--out", str(tmp_path / "x"),
                   "--text-cache", str(OFFICIAL_CACHE), "--instruction", "an instruction nobody cached"])
    err = capsys.readouterr().err
    assert rc == 2 and "an instruction nobody cached" in err and "t5_len128.wan21t2v13b.pt" in err


# -- rejections --------------------------------------------------------------------------------------


def _variant(official: dict[str, Path], tmp_path: Path, edit_ckpt=None, edit_vae=None, stats=None,
             config=None) -> dict[str, Path]:
    paths = dict(official)
    if edit_ckpt is not None:
        ckpt = torch.load(official["ckpt"], weights_only=True)
        edit_ckpt(ckpt)
        paths["ckpt"] = tmp_path / "step_1.pt"
        torch.save(ckpt, paths["ckpt"])
    if edit_vae is not None:
        vae = torch.load(official["vae"], weights_only=True)
        edit_vae(vae)
        paths["vae"] = tmp_path / "vae.pth"
        torch.save(vae, paths["vae"])
    if stats is not None:
        paths["stats"] = tmp_path / "stats.json"
        paths["stats"].write_text(json.dumps(stats))
    if config is not None:
        paths["config"] = tmp_path / "config.yaml"
        paths["config"].write_text(yaml.safe_dump(config))
    return paths


def _convert_error(paths: dict[str, Path], tmp_path: Path) -> str:
    with pytest.raises(ConvertError) as exc:
        convert(request(paths, tmp_path / "out"), TINY_BACKBONES)
    assert not (tmp_path / "out" / "manifest.json").exists()
    return str(exc.value)


def test_rejects_missing_key(official, tmp_path: Path) -> None:
    key = "mixtures.video.blocks.2.cross_attn.k.weight"
    msg = _convert_error(_variant(official, tmp_path, edit_ckpt=lambda c: c["mot"].pop(key)), tmp_path)
    assert "missing (1)" in msg and f"mot: {key}" in msg


def test_rejects_wrong_shape(official, tmp_path: Path) -> None:
    def edit(c: dict) -> None:
        c["state_fusion_action_expert"]["output.2.weight"] = torch.zeros(7, CFG.expert.trunk_dim)
        c["mot"]["mixtures.video.wam_adapters.2.up_proj.weight"] = torch.zeros(CFG.dim, 8)

    msg = _convert_error(_variant(official, tmp_path, edit_ckpt=edit), tmp_path)
    assert f"state_fusion_action_expert: output.2.weight: shape [7, {CFG.expert.trunk_dim}], " \
           f"expected [14, {CFG.expert.trunk_dim}]" in msg
    assert f"mot: mixtures.video.wam_adapters.2.up_proj.weight: shape [{CFG.dim}, 8], " \
           f"expected [{CFG.dim}, {CFG.adapter_dim}]" in msg


def test_rejects_unexpected_keys(official, tmp_path: Path) -> None:
    def edit_ckpt(c: dict) -> None:
        c["mot"]["mixtures.video.blocks.1.self_attn.lora_extra.weight"] = torch.zeros(2)
        c["mot"]["unprefixed.weight"] = torch.zeros(2)

    msg = _convert_error(_variant(official, tmp_path, edit_ckpt=edit_ckpt,
                                  edit_vae=lambda v: v.update({"encoder.extra.gamma": torch.ones(3)})), tmp_path)
    assert "unexpected (3)" in msg
    for key in ("mot: mixtures.video.blocks.1.self_attn.lora_extra.weight", "mot: unprefixed.weight",
                "vae.pth: encoder.extra.gamma"):
        assert key in msg


def test_rejects_action_dim_disagreeing_with_stats(official, tmp_path: Path) -> None:
    msg = _convert_error(_variant(official, tmp_path, stats=official_stats(action_dim=7)), tmp_path)
    assert "stats.json: action.default.global_mean has 7 values" in msg
    assert "data.train.processor.action_output_dim is 14" in msg


def test_rejects_unsupported_config(official, tmp_path: Path) -> None:
    cfg = official_config()
    cfg["model"]["video_backbone_type"] = "wan2_2_ti2v"
    msg = _convert_error(_variant(official, tmp_path, config=cfg), tmp_path)
    assert "model.video_backbone_type" in msg and "wan2_2_ti2v" in msg
    cfg = official_config()
    cfg["model"]["state_fusion_action_expert_config"]["token_pooling_merge_dim"] = 512
    msg = _convert_error(_variant(official, tmp_path, config=cfg), tmp_path)
    assert "model.state_fusion_action_expert_config.token_pooling_merge_dim" in msg
    cfg = official_config()
    del cfg["model"]["wam_adapter"]["adapter_dim"]
    msg = _convert_error(_variant(official, tmp_path, config=cfg), tmp_path)
    assert "missing key model.wam_adapter.adapter_dim" in msg
    cfg = official_config()
    cfg["data"]["train"]["processor"]["norm_default_mode"] = "mean/std"
    msg = _convert_error(_variant(official, tmp_path, config=cfg), tmp_path)
    assert "norm_default_mode" in msg and "mean/std" in msg


def test_libero_style_config_picks_layout_and_min_max(official, tmp_path: Path) -> None:
    """concat_multi_camera 'horizontal' with 2 cameras -> libero_2cam; min/max statistics are used."""
    cfg = official_config()
    train = cfg["data"]["train"]
    train["shape_meta"]["images"] = [{"key": "image", "raw_shape": [3, 256, 256], "shape": [3, 224, 224]},
                                     {"key": "wrist_image", "raw_shape": [3, 256, 256], "shape": [3, 224, 224]}]
    train["processor"]["shape_meta"] = train["shape_meta"]
    train.update(video_size=[224, 448], concat_multi_camera="horizontal")
    train["processor"]["norm_default_mode"] = "min/max"
    cfg["model"]["loss"]["action_temporal_weighting"]["num_prefix_steps"] = 8
    paths = _variant(official, tmp_path, config=cfg)
    b = convert(request(paths, tmp_path / "libero"), TINY_BACKBONES)
    assert b.embodiment.layout == LAYOUTS["libero_2cam"] and b.embodiment.trained_steps == 8
    assert b.embodiment.normalization["mode"] == "min/max"
    shutil.rmtree(tmp_path / "libero")
