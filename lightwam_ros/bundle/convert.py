"""Official Light-WAM training outputs -> bundle (`lightwam convert`).

Inputs (docs/model.md, "Checkpoint conversion"): the checkpoint `step_NNNNNN.pt` ({"mot", "state_fusion_action_expert",
"proprio_encoder"}), the run's fully resolved `config.yaml`, its `dataset_stats.json`, the Wan2.1 VAE
`Wan2.1_VAE.pth`, and optionally the official text-embedding cache directory.

Unlike the official loader (strict=False, shape-mismatched keys silently dropped), every tensor
the deployed network needs is checked by name and shape against LightWAMPolicy(ModelConfig), and the
conversion fails with the full list of missing / wrong-shape / unexpected keys. Only what inference runs is
kept: no VAE decoder or conv2, no time_conv, no DiT head, no blocks after the last adapter.
Checkpoints are read with torch.load(weights_only=True, mmap=True): no code runs, and multi-GB tensors are
streamed from the page cache straight into the safetensors files.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lightwam_ros.bundle.format import PARTS, Bundle, Embodiment, expected_shapes, format_diff
from lightwam_ros.bundle.official_text_cache import read_official_text_cache
from lightwam_ros.bundle.safetensors_io import LazyTensor, sha256_file
from lightwam_ros.config.bounded_yaml import YamlLimitError, read_bounded_yaml
from lightwam_ros.model.canvas_layout import LAYOUTS, Layout
from lightwam_ros.model.config import ExpertConfig, ModelConfig, VAEConfig
from lightwam_ros.model.dtypes import parse_dtype
from lightwam_ros.model.normalization import STAT_KEYS as NORM_STAT_KEYS
from lightwam_ros.model.normalization import NormMode
from lightwam_ros.text.prompts import PROMPT_TEMPLATE, TEXT_LEN

log = logging.getLogger(__name__)

MOT_PREFIX = "mixtures.video."



@dataclass(frozen=True)
class BackboneSpec:
    """What `model.video_backbone_type` implies beyond the yaml: DiT overrides and the VAE."""

    dit_overrides: Mapping[str, Any]
    vae: VAEConfig


# Effective Wan2.1-T2V-1.3B backbone dims: the preset that overrides the 5B numbers the resolved
# config.yaml still carries (the training code's WAN_VIDEO_BACKBONE_SPECS["wan2_1_t2v"]; docs/model.md,
# "Checkpoint conversion"); the
# VAE is Wan2.1's VideoVAE_(dim=96, z_dim=16), hardcoded upstream. wan2_2_ti2v (Wan2.2 VAE, z_dim 48)
# is not supported.
WAN21_T2V = BackboneSpec(
    dit_overrides={
        "hidden_dim": 1536, "in_dim": 16, "ffn_dim": 8960, "out_dim": 16, "patch_size": [1, 2, 2],
        "num_heads": 12, "attn_head_dim": 128, "num_layers": 30, "text_dim": 4096, "freq_dim": 256, "eps": 1.0e-6,
    },
    vae=VAEConfig(),
)
BACKBONES: dict[str, BackboneSpec] = {"wan2_1_t2v": WAN21_T2V}

# concat_multi_camera value (and camera count) -> shipped layout
LAYOUT_BY_CONCAT: dict[tuple[str, int], str] = {("robotwin", 3): "robotwin_3cam", ("horizontal", 2): "libero_2cam"}
# dataset_stats.json leaf name -> manifest stat name (global statistics: use_stepwise_action_norm is False)
STAT_KEYS: dict[str, str] = {f"global_{k}": k for k in NORM_STAT_KEYS}

ALOHA_ARM = ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate", "gripper")
ALOHA_NAMES = tuple(f"{side}_{j}" for side in ("left", "right") for j in ALOHA_ARM)
# Default action/state names when the user gives none: (layout, dim) -> names. LIBERO actions are the
# delta-EEF command, its state eef_pos + axis-angle + 2 gripper fingers
# (docs/model.md, "Action chunk: horizon and supervised prefix").
DEFAULT_NAMES: dict[tuple[str, str, int], tuple[str, ...]] = {
    ("robotwin_3cam", "action", 14): ALOHA_NAMES,
    ("robotwin_3cam", "state", 14): ALOHA_NAMES,
    ("libero_2cam", "action", 7): ("dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"),
    ("libero_2cam", "state", 8): ("eef_x", "eef_y", "eef_z", "eef_ax", "eef_ay", "eef_az", "gripper_l", "gripper_r"),
}

# A resolved Light-WAM training config.yaml is some tens of KB, a dozen levels deep, a few thousand
# YAML nodes; these bounds are far above that and far below what an alias bomb expands to.
TRAINING_CONFIG_MAX_BYTES = 4 * 2**20
TRAINING_CONFIG_MAX_DEPTH = 64
TRAINING_CONFIG_MAX_NODES = 200_000


class ConvertError(ValueError):
    """The official inputs are inconsistent or incomplete; the message names the file and key."""


# ------------------------------------------------------------------------------------------------
# config.yaml


@dataclass(frozen=True)
class TrainingConfig:
    """What the resolved training config.yaml says about the deployed network and embodiment."""

    model: ModelConfig
    layout: Layout
    norm_mode: NormMode
    trained_steps: int
    camera_keys: tuple[str, ...]


def _get(cfg: Mapping, dotted: str, where: Path, default: Any = ...) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            if default is not ...:
                return default
            raise ConvertError(f"{where}: missing key {dotted}")
        node = node[part]
    return node


def _require(cond: bool, where: Path, key: str, msg: str) -> None:
    if not cond:
        raise ConvertError(f"{where}: {key}: {msg}")


def read_training_config(path: Path, layout_name: str | None = None,
                         backbones: Mapping[str, BackboneSpec] = BACKBONES) -> TrainingConfig:
    """Parse the run's resolved config.yaml into ModelConfig + layout + normalisation mode + trained steps."""
    path = Path(path)
    try:  # bounded: a hand-edited config can carry an alias bomb or a 100000-level nesting
        cfg = read_bounded_yaml(path, max_bytes=TRAINING_CONFIG_MAX_BYTES, max_depth=TRAINING_CONFIG_MAX_DEPTH,
                                max_nodes=TRAINING_CONFIG_MAX_NODES,
                                what="a resolved training config.yaml is some tens of KB")
    except YamlLimitError as exc:
        raise ConvertError(f"cannot read the training config: {exc}") from None
    if not isinstance(cfg, Mapping) or "model" not in cfg or "data" not in cfg:
        raise ConvertError(f"{path}: expected a resolved Light-WAM training config with 'model' and 'data' sections")
    m = cfg["model"]
    backbone = _get(cfg, "model.video_backbone_type", path)
    _require(backbone in backbones, path, "model.video_backbone_type",
             f"{backbone!r} is not supported (only {sorted(backbones)}: the Wan2.1 VAE and 1.3B DiT)")
    spec = backbones[backbone]
    dit = dict(_get(cfg, "model.video_dit_config", path))
    dit.update(spec.dit_overrides)
    _require(dit.get("num_heads", 0) * dit.get("attn_head_dim", 0) == dit.get("hidden_dim"), path,
             "model.video_dit_config", "num_heads * attn_head_dim must equal hidden_dim")

    wam = _get(cfg, "model.wam_adapter", path)
    for key in ("use_wam_adapter", "remove_original_action_expert"):
        _require(bool(wam.get(key)), path, f"model.wam_adapter.{key}",
                 "must be true (only the state-fusion action path is deployable; the ActionDiT path is not)")
    use_lora = bool(wam.get("use_backbone_lora", False))
    lora_layers = tuple(int(i) for i in wam.get("lora_layer_indices") or ()) if use_lora else ()
    targets = tuple(wam.get("lora_target_modules") or ()) if use_lora else ()

    ex = _get(cfg, "model.state_fusion_action_expert_config", path)
    for key, want in (("token_pooling_type", "learned_query"), ("token_pooling_merge_dim", None),
                      ("layer_feature_sources", None)):
        _require(ex.get(key, want) == want, path, f"model.state_fusion_action_expert_config.{key}",
                 f"{ex.get(key)!r} is not supported (expected {want!r})")
    _require(list(ex.get("feature_sources", ["adapted"])) == ["adapted"], path,
             "model.state_fusion_action_expert_config.feature_sources",
             f"{ex.get('feature_sources')!r} is not supported (expected ['adapted'])")

    proc = "data.train.processor"
    action_dim = int(_get(cfg, f"{proc}.action_output_dim", path))
    proprio_dim = int(m.get("proprio_dim") or _get(cfg, f"{proc}.proprio_output_dim", path))
    num_frames = int(_get(cfg, "data.train.num_frames", path))
    horizon = num_frames - 1
    _require(horizon > 0, path, "data.train.num_frames", f"must be > 1, got {num_frames}")
    text_len = int(m.get("tokenizer_max_len", _get(cfg, "data.train.context_len", path, TEXT_LEN)))

    def need(section: Mapping, dotted: str, key: str) -> Any:
        if key not in section:
            raise ConvertError(f"{path}: missing key {dotted}.{key}")
        return section[key]

    d = lambda k: need(dit, "model.video_dit_config", k)  # noqa: E731 - local key accessors
    w = lambda k: need(wam, "model.wam_adapter", k)  # noqa: E731
    e = lambda k: need(ex, "model.state_fusion_action_expert_config", k)  # noqa: E731
    try:
        model = ModelConfig(
            dim=int(d("hidden_dim")), in_dim=int(d("in_dim")), ffn_dim=int(d("ffn_dim")),
            num_heads=int(d("num_heads")), num_layers=int(d("num_layers")), text_dim=int(d("text_dim")),
            text_len=text_len, freq_dim=int(d("freq_dim")), eps=float(d("eps")),
            patch_size=tuple(int(p) for p in d("patch_size")),
            lora_rank=int(wam.get("lora_rank", 64)), lora_alpha=float(wam.get("lora_alpha", 128.0)),
            lora_layers=lora_layers, lora_targets=targets,
            adapter_layers=tuple(int(i) for i in w("adapter_layer_indices")), adapter_dim=int(w("adapter_dim")),
            adapter_scale=float(wam.get("adapter_scale", 1.0)),
            action_dim=action_dim, proprio_dim=proprio_dim, horizon=horizon,
            vae=spec.vae,
            expert=ExpertConfig(
                per_layer_dim=int(e("per_layer_dim")), trunk_dim=int(e("trunk_dim")),
                num_trunk_blocks=int(e("num_trunk_blocks")), step_pos_dim=int(e("step_pos_dim")),
                num_queries=int(e("token_pooling_num_queries")), num_pool_heads=int(e("token_pooling_num_heads")),
            ),
        )
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConvertError):
            raise
        raise ConvertError(f"{path}: the model section does not describe a valid network: {exc}") from exc

    # Supervised prefix: every shipped training script zeroes the tail weight (docs/model.md,
    # "Action chunk: horizon and supervised prefix").
    tw = _get(cfg, "model.loss.action_temporal_weighting", path, {}) or {}
    trained_steps = horizon
    if tw.get("enabled") and tw.get("num_prefix_steps") is not None and float(tw.get("tail_weight", 1.0)) == 0.0:
        trained_steps = int(tw["num_prefix_steps"])
        _require(0 < trained_steps <= horizon, path, "model.loss.action_temporal_weighting.num_prefix_steps",
                 f"{trained_steps} must be in 1..{horizon}")
    elif tw.get("enabled"):
        log.warning("%s: action_temporal_weighting enabled with a non-zero tail weight; all %d steps count as trained",
                    path, horizon)

    mode_raw = _get(cfg, f"{proc}.norm_default_mode", path)
    try:
        norm_mode = NormMode(mode_raw)
    except ValueError:
        raise ConvertError(f"{path}: {proc}.norm_default_mode: {mode_raw!r} is not supported "
                           f"(expected one of {[m.value for m in NormMode]})") from None
    _require(not _get(cfg, f"{proc}.use_stepwise_action_norm", path, False), path,
             f"{proc}.use_stepwise_action_norm", "stepwise statistics are not supported (expected False)")
    _require(_get(cfg, f"{proc}.norm_exception_mode", path, None) is None, path, f"{proc}.norm_exception_mode",
             "per-dimension normalisation exceptions are not supported (expected null)")
    _require(_get(cfg, f"{proc}.action_state_transforms", path, None) is None, path,
             f"{proc}.action_state_transforms", "action/state transforms are not supported (expected null)")

    layout, camera_keys = _layout_from_config(cfg, path, layout_name)
    return TrainingConfig(model=model, layout=layout, norm_mode=norm_mode,
                          trained_steps=trained_steps, camera_keys=camera_keys)


def _layout_from_config(cfg: Mapping, path: Path, layout_name: str | None) -> tuple[Layout, tuple[str, ...]]:
    images = _get(cfg, "data.train.shape_meta.images", path)
    keys = tuple(str(im["key"]) for im in images)
    concat = _get(cfg, "data.train.concat_multi_camera", path, None)
    if layout_name is None:
        layout_name = LAYOUT_BY_CONCAT.get((str(concat), len(keys)))
        _require(layout_name is not None, path, "data.train.concat_multi_camera",
                 f"{concat!r} with {len(keys)} cameras matches no shipped layout ({sorted(LAYOUTS)}); pass --layout")
    if layout_name not in LAYOUTS:
        raise ConvertError(f"--layout {layout_name!r}: unknown layout; known {sorted(LAYOUTS)}")
    layout = LAYOUTS[layout_name]
    _require(len(keys) == len(layout.cameras), path, "data.train.shape_meta.images",
             f"{len(keys)} cameras {list(keys)}, layout {layout_name} tiles {len(layout.cameras)}")
    # Tiling is positional in training (_finalize_video_tensor), so the config's camera keys name the cells.
    if tuple(layout.cameras) != keys:
        log.info("layout %s: naming cameras %s after config.yaml (was %s)", layout_name, list(keys),
                 list(layout.cameras))
        layout = rename_layout_cameras(layout, keys)
    video_size = _get(cfg, "data.train.video_size", path, None)
    if video_size is not None:
        _require(tuple(int(v) for v in video_size) == tuple(layout.canvas_hw), path, "data.train.video_size",
                 f"{list(video_size)} but layout {layout_name} builds a {list(layout.canvas_hw)} canvas")
    for i, im in enumerate(images):
        shape = im.get("shape")
        if shape is not None:
            want = tuple(layout.pre_resize_hw[keys[i]])
            _require(tuple(int(s) for s in shape[-2:]) == want, path, f"data.train.shape_meta.images[{i}].shape",
                     f"{list(shape)} but layout {layout_name} resizes {keys[i]} to {list(want)}")
    return layout, keys


def rename_layout_cameras(layout: Layout, names: Sequence[str]) -> Layout:
    """Same tiling with the cameras renamed positionally."""
    mapping = dict(zip(layout.cameras, names))
    d = layout.to_dict()
    d["cells"] = [{**c, "camera": mapping[c["camera"]]} for c in d["cells"]]
    d["pre_resize_hw"] = {mapping[k]: v for k, v in d["pre_resize_hw"].items()}
    return Layout.from_dict(d)


# ------------------------------------------------------------------------------------------------
# dataset_stats.json


def read_dataset_stats(path: Path, mode: NormMode, action_dim: int, proprio_dim: int, config_path: Path) -> dict:
    """Global statistics -> manifest normalization dict; dims are checked against the config."""
    path = Path(path)
    try:
        stats = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConvertError(f"{path}: cannot read JSON ({exc})") from exc
    out: dict[str, Any] = {"mode": mode.value}
    required = {f"global_{k}" for k in mode.required}
    for part, dim, cfg_key in (("action", action_dim, "data.train.processor.action_output_dim"),
                               ("state", proprio_dim, "data.train.processor.proprio_output_dim")):
        leaf = stats.get(part, {}).get("default") if isinstance(stats.get(part), Mapping) else None
        if not isinstance(leaf, Mapping):
            raise ConvertError(f"{path}: missing key {part}.default")
        part_stats: dict[str, list[float]] = {}
        for src, dst in STAT_KEYS.items():
            if src not in leaf:
                if src in required:
                    raise ConvertError(f"{path}: missing key {part}.default.{src} (needed for {mode.value})")
                continue
            values = [float(v) for v in leaf[src]]
            if len(values) != dim:
                raise ConvertError(
                    f"{path}: {part}.default.{src} has {len(values)} values but {config_path} {cfg_key} is {dim}"
                )
            if not all(math.isfinite(v) for v in values):
                raise ConvertError(f"{path}: {part}.default.{src} contains NaN/Inf")
            part_stats[dst] = values
        out[part] = part_stats
    return out


# ------------------------------------------------------------------------------------------------
# checkpoint and VAE


def _load_error(exc: BaseException, limit: int = 300) -> str:
    """One line saying why torch.load refused a file.

    torch's own message for a refused pickle spans several lines, carries terminal escapes and
    advises loading with weights_only=False or allowlisting globals, either of which would run what
    the file holds; only the reason the restricted unpickler gave is kept.
    """
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    if "Weights only load failed" in text:
        reason = text.split("WeightsUnpickler error:", 1)[-1]
        lines = [ln.strip() for ln in reason.splitlines()
                 if ln.strip() and not ln.strip().startswith(("Check the documentation", "Weights only load"))]
        reason = lines[0].split(" Please use")[0] if lines else "no reason given"
        return f"refused by the weights-only unpickler: {reason[:limit]}; only tensors and plain containers are read"
    if isinstance(exc, EOFError):
        return "the file ends early"
    line = " ".join(text.split())
    return f"{type(exc).__name__}: {line[:limit]}" if line else type(exc).__name__


def torch_load_tensors(path: Path, what: str) -> dict:
    """torch.load without unpickling code, memory-mapped when the file is in the zip format.

    Every failure, the retry without mmap for a legacy (non-zip) file included, is one ConvertError
    line naming the file: an empty, truncated or garbage file fails inside pickle with EOFError,
    KeyError or UnpicklingError, which name nothing.
    """
    path = Path(path)
    if not path.is_file():
        raise ConvertError(f"{what} {path}: no such file")
    if path.stat().st_size == 0:
        raise ConvertError(f"{what} {path}: empty file")
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc).lower():
                raise
        log.warning("%s: legacy (non-zip) torch file, loading without mmap", path)
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and storage errors of every type: name the file
        raise ConvertError(f"{what} {path}: cannot load as a torch checkpoint ({_load_error(exc)})") from exc


@dataclass
class Mapped:
    """Tensors of one bundle part plus what was dropped and what failed, keyed by official name."""

    tensors: dict[str, LazyTensor]
    dropped: list[str]
    missing: list[str]
    mismatched: list[str]
    unexpected: list[str]


def _lazy(src: torch.Tensor, dtype: torch.dtype, shape: tuple[int, ...] | None = None,
          take_last_tap: bool = False) -> LazyTensor:
    # causal 3x3x3 conv on one frame: only the last temporal tap sees data
    # (docs/model.md, "VAE encoder (one frame)")
    if take_last_tap:
        return LazyTensor(tuple(shape), dtype, lambda: src[:, :, -1].to(dtype).contiguous())
    if shape is not None and tuple(src.shape) != tuple(shape):
        return LazyTensor(tuple(shape), dtype, lambda: src.reshape(shape).to(dtype).contiguous())
    return LazyTensor(tuple(src.shape), dtype, lambda: src.to(dtype).contiguous())


def _match(source: str, state: Mapping[str, torch.Tensor], expected: Mapping[str, tuple[int, ...]], dtype: torch.dtype,
           prefix: str = "", drop: re.Pattern | None = None, vae_2d: bool = False) -> Mapped:
    m = Mapped({}, [], [], [], [])
    seen: set[str] = set()
    for raw_name, t in state.items():
        if not isinstance(raw_name, str):
            m.unexpected.append(f"{source}: {raw_name!r} (not a string key)")
            continue
        if not isinstance(t, torch.Tensor):
            m.unexpected.append(f"{source}: {raw_name} (not a tensor)")
            continue
        if not raw_name.startswith(prefix):
            m.unexpected.append(f"{source}: {raw_name}")
            continue
        name = raw_name[len(prefix):]
        if name not in expected:
            if drop is not None and drop.match(name):
                m.dropped.append(name)
            else:
                m.unexpected.append(f"{source}: {raw_name}")
            continue
        seen.add(name)
        want = tuple(expected[name])
        have = tuple(t.shape)
        if have == want:
            m.tensors[name] = _lazy(t, dtype)
        elif vae_2d and len(have) == 5 and len(want) == 4 and have[:2] + have[3:] == want:
            m.tensors[name] = _lazy(t, dtype, want, take_last_tap=True)
        elif vae_2d and t.numel() == math.prod(want) and [s for s in have if s != 1] == [s for s in want if s != 1]:
            m.tensors[name] = _lazy(t, dtype, want)  # RMS_norm gamma [C,1,1,1] <-> [C,1,1]
        else:
            m.mismatched.append(f"{source}: {raw_name}: shape {list(have)}, expected {list(want)}")
    m.missing = [f"{source}: {prefix}{k}" for k in sorted(set(expected) - seen)]
    return m


def map_checkpoint(ckpt: Mapping[str, Any], cfg: ModelConfig, dtype: torch.dtype, ckpt_path: Path) -> dict[str, Mapped]:
    """Official .pt payload -> bundle parts dit / expert / proprio_encoder (checked, lazily cast)."""
    expected = expected_shapes(cfg, lora_merged=False)
    missing_top = [k for k in ("mot", "state_fusion_action_expert", "proprio_encoder") if k not in ckpt]
    if missing_top:
        raise ConvertError(
            f"{ckpt_path}: missing top-level keys {missing_top} (has {sorted(map(repr, ckpt))}); expected a "
            "Light-WAM state-fusion checkpoint written by LightWAM.save_checkpoint"
        )
    for key in ("mot", "state_fusion_action_expert", "proprio_encoder"):
        if not isinstance(ckpt[key], Mapping):
            raise ConvertError(f"{ckpt_path}: {key} must be a dict of tensors, got {type(ckpt[key]).__name__}")
    extra_top = sorted(map(repr, set(ckpt) - {"mot", "state_fusion_action_expert", "proprio_encoder", "step",
                                              "torch_dtype", "optimizer"}))
    if extra_top:
        log.warning("%s: ignoring top-level keys %s", ckpt_path, extra_top)
    # Unused at inference: the DiT output head and every block after the last adapter
    # (docs/model.md, "What is skipped and why").
    late = "|".join(str(i) for i in range(cfg.run_layers, cfg.num_layers))
    drop = re.compile(rf"^(head\.|blocks\.({late})\.)" if late else r"^head\.")
    return {
        "dit": _match("mot", ckpt["mot"], expected["dit"], dtype, MOT_PREFIX, drop),
        "expert": _match("state_fusion_action_expert", ckpt["state_fusion_action_expert"], expected["expert"], dtype),
        "proprio_encoder": _match("proprio_encoder", ckpt["proprio_encoder"], expected["proprio_encoder"], dtype),
    }


# The VAE decoder half and the temporal downsample convs never run for a single frame
# (docs/model.md, "What is skipped and why").
VAE_DROP = re.compile(r"^(decoder\.|conv2\.|encoder\.downsamples\.\d+\.time_conv\.)")


def map_vae(vae_state: Mapping[str, Any], cfg: ModelConfig, dtype: torch.dtype, vae_path: Path) -> Mapped:
    """Flat Wan2.1_VAE.pth dict -> the 2-D encoder (encoder.*, conv1.*), 5-D kernels sliced to the last tap."""
    state = vae_state.get("model_state", vae_state) if isinstance(vae_state, Mapping) else vae_state
    if not isinstance(state, Mapping):
        raise ConvertError(f"{vae_path}: expected a dict of tensors, got {type(state).__name__}")
    if state and all(isinstance(k, str) and k.startswith("model.") for k in state):  # DiffSynth-converted naming
        state = {k[len("model."):]: v for k, v in state.items()}
    expected = expected_shapes(cfg, lora_merged=False)["vae"]
    return _match(vae_path.name, state, expected, dtype, drop=VAE_DROP, vae_2d=True)


# ------------------------------------------------------------------------------------------------
# text contexts


def read_text_contexts(cache_dir: Path, instructions: Sequence[str], template: str,
                       cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Contexts of the given instructions from the official cache, padding rows zeroed.

    docs/model.md, "Text contexts (umT5)"."""
    out: dict[str, torch.Tensor] = {}
    for ins in instructions:
        try:
            ctx = read_official_text_cache(cache_dir, ins, template=template, context_len=cfg.text_len)
        except (FileNotFoundError, ValueError) as exc:
            raise ConvertError(f"--text-cache {cache_dir}: instruction {ins!r}: {exc}") from exc
        if tuple(ctx.shape) != (cfg.text_len, cfg.text_dim):
            raise ConvertError(f"--text-cache {cache_dir}: instruction {ins!r}: context shape {list(ctx.shape)}, "
                               f"expected {[cfg.text_len, cfg.text_dim]}")
        out[ins] = ctx
    return out


# ------------------------------------------------------------------------------------------------
# convert


@dataclass(frozen=True)
class ConvertRequest:
    """Arguments of `lightwam convert` (paths of the official training outputs)."""

    ckpt: Path
    config: Path
    stats: Path
    vae: Path
    out: Path
    text_cache: Path | None = None
    instructions: tuple[str, ...] = ()
    layout: str | None = None
    dtype: str = "bfloat16"  # bundle weight dtype; the official weights are bf16
    action_rate_hz: float | None = None  # not recorded by the training data (docs/model.md)
    action_names: tuple[str, ...] | None = None
    state_names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        for name in ("ckpt", "config", "stats", "vae", "out"):
            object.__setattr__(self, name, Path(getattr(self, name)))
        if self.text_cache is not None:
            object.__setattr__(self, "text_cache", Path(self.text_cache))
        object.__setattr__(self, "instructions", tuple(self.instructions))
        parse_dtype(self.dtype, "--dtype")
        if self.instructions and self.text_cache is None:
            raise ValueError("--instruction needs --text-cache (the official text-embedding cache directory)")
        if self.action_rate_hz is not None and not self.action_rate_hz > 0:
            raise ValueError(f"--action-rate-hz must be > 0, got {self.action_rate_hz}")


def _step(value: Any) -> int | None:
    """The checkpoint's training step for the manifest: an integer, or null for anything else."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _names(given: tuple[str, ...] | None, layout: str, part: str, dim: int) -> tuple[str, ...]:
    if given is not None:
        if len(given) != dim:
            raise ConvertError(f"--{part}-names has {len(given)} names but the checkpoint's {part} has {dim} dims")
        return tuple(given)
    return DEFAULT_NAMES.get((layout, part, dim), tuple(f"{part}_{i}" for i in range(dim)))


def convert(req: ConvertRequest, backbones: Mapping[str, BackboneSpec] = BACKBONES) -> Bundle:
    """Check the official inputs against each other and write a verified bundle to req.out.

    `backbones` maps model.video_backbone_type to its spec; tests pass a tiny spec for the same type.
    """
    for flag, p in (("--ckpt", req.ckpt), ("--config", req.config), ("--stats", req.stats), ("--vae", req.vae)):
        if not p.is_file():
            raise ConvertError(f"{flag} {p}: no such file")
    if req.text_cache is not None and not req.text_cache.is_dir():
        raise ConvertError(f"--text-cache {req.text_cache}: no such directory")
    dtype = parse_dtype(req.dtype, "--dtype")
    tc = read_training_config(req.config, req.layout, backbones)
    cfg = tc.model
    log.info("config %s: dim %d, %d layers (running %d), adapters %s, action_dim %d, proprio_dim %d, horizon %d, "
             "trained steps %d, layout %s", req.config, cfg.dim, cfg.num_layers, cfg.run_layers,
             list(cfg.adapter_layers), cfg.action_dim, cfg.proprio_dim, cfg.horizon, tc.trained_steps, tc.layout.name)
    normalization = read_dataset_stats(req.stats, tc.norm_mode, cfg.action_dim, cfg.proprio_dim, req.config)
    contexts = (read_text_contexts(req.text_cache, req.instructions, PROMPT_TEMPLATE, cfg)
                if req.instructions else {})

    log.info("loading checkpoint %s (mmap)", req.ckpt)
    ckpt = torch_load_tensors(req.ckpt, "--ckpt")
    if not isinstance(ckpt, Mapping):
        raise ConvertError(f"--ckpt {req.ckpt}: expected a dict payload, got {type(ckpt).__name__}")
    log.info("loading VAE %s (mmap)", req.vae)
    vae_state = torch_load_tensors(req.vae, "--vae")
    parts = map_checkpoint(ckpt, cfg, dtype, req.ckpt)
    parts["vae"] = map_vae(vae_state, cfg, dtype, req.vae)

    missing = [x for p in parts.values() for x in p.missing]
    mismatched = [x for p in parts.values() for x in p.mismatched]
    unexpected = [x for p in parts.values() for x in p.unexpected]
    if missing or mismatched or unexpected:
        raise ConvertError(format_diff(
            f"checkpoint {req.ckpt.name} / VAE {req.vae.name} vs the network of {req.config.name}",
            missing, mismatched, unexpected))
    for part, m in parts.items():
        if m.dropped:
            log.info("%s: dropped %d tensors unused at inference (e.g. %s)", part, len(m.dropped), m.dropped[0])

    embodiment = Embodiment(
        layout=tc.layout,
        action_names=_names(req.action_names, tc.layout.name, "action", cfg.action_dim),
        state_names=_names(req.state_names, tc.layout.name, "state", cfg.proprio_dim),
        normalization=normalization,
        trained_steps=tc.trained_steps,
        action_rate_hz=req.action_rate_hz,
    )
    source = {
        "converted_from": {
            "ckpt": {"path": str(req.ckpt), "step": _step(ckpt.get("step"))},
            "config": {"path": str(req.config), "sha256": sha256_file(req.config)},
            "stats": {"path": str(req.stats), "sha256": sha256_file(req.stats)},
            "vae": {"path": str(req.vae)},
        }
    }
    log.info("writing bundle %s (%s)", req.out, req.dtype)
    bundle = Bundle.write(req.out, cfg, embodiment, {p: parts[p].tensors for p in PARTS}, contexts,
                          template=PROMPT_TEMPLATE, lora_merged=False, source=source)
    log.info("bundle %s: %d instructions, files %s", req.out, len(bundle.instructions), sorted(bundle.files))
    return bundle
