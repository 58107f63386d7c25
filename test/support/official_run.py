"""Official-format training outputs (checkpoint, VAE, config.yaml, dataset_stats.json) made from a bundle.

Why from a bundle: the malformed-input and fuzz tests of `lightwam convert` need a run that converts
cleanly, so that each test changes exactly one input and every failure is caused by that change. The
tiny demo bundle is at hand in every test session, and its tensors carry the official names, so
`mixtures.video.` + the DiT names, the expert and the proprio encoder form a checkpoint the converter
accepts as is (no head or late blocks: those are only dropped when present), and its 2-D VAE encoder
is already in the shape the converter keeps. The config is the minimum read_training_config needs.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml
from safetensors import safe_open

from lightwam_ros.bundle.convert import BackboneSpec
from lightwam_ros.bundle.format import PARTS, Bundle


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def backbones(bundle_dir: Path) -> dict[str, BackboneSpec]:
    """The `wan2_1_t2v` preset with the bundle's dims, for convert(..., backbones) or BACKBONES."""
    cfg = Bundle.load(bundle_dir, verify=False).model_config
    dit = {"hidden_dim": cfg.dim, "in_dim": cfg.in_dim, "ffn_dim": cfg.ffn_dim, "out_dim": cfg.in_dim,
           "patch_size": list(cfg.patch_size), "num_heads": cfg.num_heads, "attn_head_dim": cfg.head_dim,
           "num_layers": cfg.num_layers, "text_dim": cfg.text_dim, "freq_dim": cfg.freq_dim, "eps": cfg.eps}
    return {"wan2_1_t2v": BackboneSpec(dit_overrides=dit, vae=cfg.vae)}


def write_official_run(bundle_dir: Path, out: Path, legacy: bool = False) -> dict[str, Path]:
    """Write ckpt / vae / config / stats for the bundle's network into `out`; return their paths.

    `legacy` writes both .pt files in the old non-zip torch format.
    """
    bundle = Bundle.load(bundle_dir, verify=False)
    cfg, emb = bundle.model_config, bundle.embodiment
    out.mkdir(parents=True, exist_ok=True)
    paths = {"ckpt": out / "step_000001.pt", "config": out / "config.yaml", "stats": out / "dataset_stats.json",
             "vae": out / "Wan2.1_VAE.pth"}
    parts = {p: _tensors(bundle_dir / f) for p, f in PARTS.items()}
    ckpt = {"mot": {f"mixtures.video.{k}": v for k, v in parts["dit"].items()},
            "state_fusion_action_expert": parts["expert"], "proprio_encoder": parts["proprio_encoder"], "step": 1}
    zip_format = {"_use_new_zipfile_serialization": False} if legacy else {}
    torch.save(ckpt, paths["ckpt"], **zip_format)
    torch.save(parts["vae"], paths["vae"], **zip_format)
    layout = emb.layout
    images = [{"key": cam, "shape": [3, *layout.pre_resize_hw[cam]]} for cam in layout.cameras]
    processor = {"action_output_dim": cfg.action_dim, "proprio_output_dim": cfg.proprio_dim,
                 "norm_default_mode": emb.normalization["mode"], "use_stepwise_action_norm": False,
                 "norm_exception_mode": None, "action_state_transforms": None}
    train = {"shape_meta": {"images": images}, "num_frames": cfg.horizon + 1, "video_size": list(layout.canvas_hw),
             "concat_multi_camera": "robotwin", "processor": processor, "context_len": cfg.text_len}
    model = {
        "video_backbone_type": "wan2_1_t2v", "tokenizer_max_len": cfg.text_len, "proprio_dim": cfg.proprio_dim,
        "video_dit_config": {"num_heads": cfg.num_heads, "attn_head_dim": cfg.head_dim, "hidden_dim": cfg.dim},
        "wam_adapter": {"use_wam_adapter": True, "remove_original_action_expert": True,
                        "adapter_layer_indices": list(cfg.adapter_layers), "adapter_dim": cfg.adapter_dim,
                        "adapter_scale": cfg.adapter_scale, "use_backbone_lora": True,
                        "lora_layer_indices": list(cfg.lora_layers), "lora_target_modules": list(cfg.lora_targets),
                        "lora_rank": cfg.lora_rank, "lora_alpha": cfg.lora_alpha},
        "state_fusion_action_expert_config": {
            "per_layer_dim": cfg.expert.per_layer_dim, "trunk_dim": cfg.expert.trunk_dim,
            "num_trunk_blocks": cfg.expert.num_trunk_blocks, "step_pos_dim": cfg.expert.step_pos_dim,
            "token_pooling_type": "learned_query", "token_pooling_num_queries": cfg.expert.num_queries,
            "token_pooling_num_heads": cfg.expert.num_pool_heads, "feature_sources": ["adapted"]},
    }
    paths["config"].write_text(yaml.safe_dump({"model": model, "data": {"train": train}}, sort_keys=False))
    norm = emb.normalization
    stats = {part: {"default": {f"global_{k}": v for k, v in norm[part].items()}} for part in ("action", "state")}
    paths["stats"].write_text(json.dumps(stats))
    return paths
