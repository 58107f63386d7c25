"""The deployable model bundle: a directory the robot loads (docs/design.md, "The bundle").

A bundle is `manifest.json` plus safetensors files (never pickles, so loading cannot execute code):

    manifest.json               format, model dims, embodiment, prompt template, sha256 of every file
    dit.safetensors             DiT blocks actually run (0..run_layers-1), LoRA (unless merged), adapters
    vae_encoder.safetensors     Wan2.1 VAE encoder as the exact 2-D network (encoder.*, conv1.*)
    expert.safetensors          StateFusionActionExpert
    proprio_encoder.safetensors Linear(P -> text_dim)
    text_contexts.safetensors   sha256(templated prompt) -> [text_len, text_dim], padding rows zeroed
    policy_<dtype>.onnx         optional exported graphs (`lightwam export-onnx`)

Tensor names are the official parameter names, so a bundle can be diffed against the checkpoint.
Verification happens on load, before anything runs on the robot: every file's sha256, every tensor
name and shape against the network built from the manifest's ModelConfig, and every dimension the
embodiment declares. Each failure names the file and the key, because whoever reads it is deciding
which file to rebuild.

The byte level (safetensors writing and reading, file sha256) is safetensors_io.py; BundleError is
errors.py, so that module and the text contexts can raise it without importing this one.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import reprlib
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lightwam_ros.bundle.errors import BundleError
from lightwam_ros.bundle.safetensors_io import (
    FLOAT_ST_DTYPES,
    TensorSource,
    load_safetensors,
    read_safetensors_header,
    sha256_file,
    shape_dtype,
    write_safetensors,
)
from lightwam_ros.model.canvas_layout import Layout
from lightwam_ros.model.config import ModelConfig
from lightwam_ros.model.dtypes import dtype_name
from lightwam_ros.model.normalization import Normalizer
from lightwam_ros.text.prompts import PROMPT_TEMPLATE, prompt_key

FORMAT = "lightwam-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
CONTEXTS_FILE = "text_contexts.safetensors"

# Bounds on what a manifest may hold, checked before anything is done per entry. A real manifest is
# a few KB, 5 levels deep, lists 5 to 11 files and about 150 bytes per instruction; the bounds are
# far above that, so they only ever refuse a corrupt or hostile file (docs/bad-files.md).
MAX_MANIFEST_BYTES = 16 << 20
MAX_MANIFEST_DEPTH = 32
MAX_FILES = 1024
MAX_INSTRUCTIONS = 16384
MAX_ONNX_EXPORTS = 64
_SHA256 = re.compile(r"[0-9a-f]{64}")
MAX_MESSAGE_CHARS = 1000  # an error quoting a value from the file quotes at most this much of it

# Values from the file are quoted through this: a 60000-entry list or a megabyte string in the wrong
# place would otherwise become a megabyte error line.
_short = reprlib.Repr()
_short.maxstring = _short.maxother = 120
_short.maxlist = _short.maxdict = _short.maxtuple = 8
_short.maxlevel = 3

# part (= state_dict prefix of LightWAMPolicy) -> weights file
PARTS: dict[str, str] = {
    "dit": "dit.safetensors",
    "vae": "vae_encoder.safetensors",
    "expert": "expert.safetensors",
    "proprio_encoder": "proprio_encoder.safetensors",
}


def is_lora_key(name: str) -> bool:
    """LoRA parameters (`*.lora_q.down_proj.weight`, `ffn_lora_in.*`), absent once merged."""
    return ".lora_" in name or ".ffn_lora_" in name or name.startswith(("lora_", "ffn_lora_"))


# ------------------------------------------------------------------------------------------------
# Embodiment


@dataclass(frozen=True)
class Embodiment:
    """What the checkpoint was trained on: cameras/canvas, action and state meaning, statistics, timing."""

    layout: Layout
    action_names: tuple[str, ...]
    state_names: tuple[str, ...]
    # Normalizer.to_dict(): {"mode": "z-score"|"min/max"|"q01/q99", "action": {stat: [A]}, "state": {stat: [P]}}
    normalization: dict
    trained_steps: int  # leading chunk steps that were supervised (num_prefix_steps)
    action_rate_hz: float | None = None  # chunk step rate; None when the training data did not say
    cameras: tuple[str, ...] = field(default=())  # = layout camera order (filled in when empty)

    def __post_init__(self) -> None:
        object.__setattr__(self, "action_names", tuple(self.action_names))
        object.__setattr__(self, "state_names", tuple(self.state_names))
        layout_cams = tuple(self.layout.cameras)
        if not self.cameras:
            object.__setattr__(self, "cameras", layout_cams)
        object.__setattr__(self, "cameras", tuple(self.cameras))
        for key in ("action_names", "state_names", "cameras"):  # joint and camera names end up in ROS messages
            bad = [n for n in getattr(self, key) if not isinstance(n, str)]
            if bad:
                raise ValueError(f"embodiment.{key} must be strings, got {_short.repr(bad[0])}")
        if self.cameras != layout_cams:
            raise ValueError(f"embodiment.cameras {list(self.cameras)} differ from layout cameras {list(layout_cams)}")
        try:
            normalizer = Normalizer.from_dict(self.normalization)
        except (TypeError, ValueError) as exc:  # numpy's own messages name no key
            msg = str(exc)
            raise ValueError(f"embodiment.{msg}" if msg.startswith("normalization")
                             else f"embodiment.normalization: {msg}") from None
        object.__setattr__(self, "normalization", normalizer.to_dict())  # canonical mode name, float lists
        for part, have, names in (("action", normalizer.action_dim, self.action_names),
                                  ("state", normalizer.state_dim, self.state_names)):
            if have != len(names):
                raise ValueError(
                    f"embodiment.normalization.{part} statistics have {have} values but "
                    f"embodiment.{part}_names has {len(names)}"
                )
        if len(set(self.action_names)) != len(self.action_names):
            raise ValueError(f"embodiment.action_names has duplicates: {list(self.action_names)}")
        if self.trained_steps <= 0:
            raise ValueError(f"embodiment.trained_steps must be > 0, got {self.trained_steps}")
        rate = self.action_rate_hz
        if rate is not None and (isinstance(rate, bool) or not isinstance(rate, (int, float))
                                 or not (rate > 0 and math.isfinite(rate))):
            raise ValueError(f"embodiment.action_rate_hz must be a finite number > 0 or null, got {_short.repr(rate)}")

    @property
    def action_dim(self) -> int:
        return len(self.action_names)

    @property
    def state_dim(self) -> int:
        return len(self.state_names)

    @property
    def normalizer(self) -> Normalizer:
        return Normalizer.from_dict(self.normalization)

    def to_dict(self) -> dict:
        return {
            "layout": self.layout.to_dict(),
            "cameras": list(self.cameras),
            "action_names": list(self.action_names),
            "state_names": list(self.state_names),
            "normalization": self.normalization,
            "trained_steps": int(self.trained_steps),
            "action_rate_hz": None if self.action_rate_hz is None else float(self.action_rate_hz),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Embodiment:
        known = {"layout", "cameras", "action_names", "state_names", "normalization", "trained_steps", "action_rate_hz"}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"embodiment: unknown keys {sorted(unknown)}")
        missing = known - {"cameras", "action_rate_hz"} - set(data)
        if missing:
            raise ValueError(f"embodiment: missing keys {sorted(missing)}")
        return cls(
            layout=Layout.from_dict(data["layout"]),
            cameras=tuple(data.get("cameras", ())),
            action_names=tuple(data["action_names"]),
            state_names=tuple(data["state_names"]),
            normalization=dict(data["normalization"]),
            trained_steps=int(data["trained_steps"]),
            action_rate_hz=data.get("action_rate_hz"),
        )


# ------------------------------------------------------------------------------------------------
# Expected tensors (the network built from the manifest's ModelConfig)


def expected_shapes(cfg: ModelConfig, lora_merged: bool) -> dict[str, dict[str, tuple[int, ...]]]:
    """part -> {official name: shape} of every tensor LightWAMPolicy(cfg) loads.

    Built on the meta device, so it costs no memory even for the full 1.5B-parameter model; cached
    per config, since every verify and every convert asks again and building the modules takes
    0.1-0.3 s even for the tiny model on a slow CPU. Callers get their own copy.
    """
    return {part: dict(shapes) for part, shapes in _expected_shapes(cfg, lora_merged).items()}


@functools.lru_cache(maxsize=8)
def _expected_shapes(cfg: ModelConfig, lora_merged: bool) -> dict[str, dict[str, tuple[int, ...]]]:
    from lightwam_ros.model.policy import LightWAMPolicy  # heavy import, only when verifying

    with torch.device("meta"):
        policy = LightWAMPolicy(cfg)
    out: dict[str, dict[str, tuple[int, ...]]] = {p: {} for p in PARTS}
    for name, t in policy.state_dict().items():
        part, _, key = name.partition(".")
        if part not in out:
            raise BundleError(f"LightWAMPolicy has a tensor outside the bundle parts: {name}")
        if lora_merged and is_lora_key(key):
            continue
        out[part][key] = tuple(t.shape)
    return out


def diff_tensors(
    expected: Mapping[str, tuple[int, ...]], actual: Mapping[str, tuple[int, ...]]
) -> tuple[list[str], list[str], list[str]]:
    """(missing, mismatched 'name: have X, expected Y', unexpected), each sorted."""
    missing = sorted(set(expected) - set(actual))
    unexpected = sorted(set(actual) - set(expected))
    mismatched = sorted(
        f"{k}: shape {list(actual[k])}, expected {list(expected[k])}"
        for k in set(expected) & set(actual)
        if tuple(actual[k]) != tuple(expected[k])
    )
    return missing, mismatched, unexpected


def format_diff(where: str, missing: list[str], mismatched: list[str], unexpected: list[str], limit: int = 40) -> str:
    lines = [f"{where}: tensors disagree with the model config"]
    for title, items in (("missing", missing), ("wrong shape", mismatched), ("unexpected", unexpected)):
        if items:
            lines.append(f"  {title} ({len(items)}):")
            lines += [f"    {x}" for x in items[:limit]]
            if len(items) > limit:
                lines.append(f"    ... and {len(items) - limit} more")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# Bundle


def dumps_manifest(obj: Any, indent: int = 0) -> str:
    """JSON with nested objects indented and lists of scalars on one line (readable, diffable)."""
    pad, inner = "  " * indent, "  " * (indent + 1)
    if isinstance(obj, Mapping):
        if not obj:
            return "{}"
        items = [f"{inner}{json.dumps(str(k))}: {dumps_manifest(v, indent + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, (list, tuple)):
        if all(not isinstance(v, (Mapping, list, tuple)) for v in obj):
            return json.dumps(list(obj))
        return "[\n" + ",\n".join(inner + dumps_manifest(v, indent + 1) for v in obj) + "\n" + pad + "]"
    return json.dumps(obj)


def json_type(value: Any) -> str:
    """The JSON name of a parsed value's type, for messages about a manifest someone edited by hand."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    for kind, name in ((dict, "an object"), (list, "a list"), (str, "a string"), ((int, float), "a number")):
        if isinstance(value, kind):
            return name
    return type(value).__name__


def _nesting(value: Any, limit: int) -> int:
    """Depth of nested lists/objects, counted without recursion and stopping once past `limit`.

    Why iterative: the manifest is written back by the recursive dumps_manifest, and read by code
    that recurses, so depth must be bounded by a walk that cannot itself overflow the stack.
    """
    deepest, stack = 0, [(value, 1)]
    while stack and deepest <= limit:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children)
    return deepest


def inside(directory: Path, path: Path) -> Path:
    """`path` resolved, or BundleError unless it is a regular file inside `directory` (resolved too).

    Why resolve: a symlink copied with a bundle can point anywhere -- another model's weights whose
    hash the manifest was edited to match, a device, /proc/self/mem -- and a bundle is only ever its
    own directory. Links between the bundle's own files, and a symlinked bundle directory, are fine.
    """
    try:
        real = path.resolve(strict=True)
        mode = real.stat().st_mode
    except FileNotFoundError:
        raise BundleError(f"{path}: missing (listed in {MANIFEST})") from None
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop before Python 3.13
        raise BundleError(f"{path}: cannot be resolved ({exc})") from None
    if not real.is_relative_to(directory.resolve()):
        raise BundleError(f"{path}: resolves to {real}, outside the bundle directory {directory}")
    if not stat.S_ISREG(mode):
        raise BundleError(f"{path}: not a regular file")
    return real


def _required(section: Mapping, key: str, where: Path, prefix: str = "") -> Any:
    if key not in section:
        raise BundleError(f"{where}: missing key '{prefix}{key}'")
    return section[key]


def read_manifest(path: Path) -> dict:
    """manifest.json parsed, with each way it can be broken named: size, encoding, JSON, nesting, type.

    The size is bounded on the bytes read, before parsing, so a huge file costs no more than the
    bound to refuse. Python's JSON parser recurses per nesting level and raises RecursionError on
    deep input, and ValueError on integers longer than 4300 digits; both are named here.
    """
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_MANIFEST_BYTES + 1)
    except OSError as exc:
        raise BundleError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if len(raw) > MAX_MANIFEST_BYTES:
        raise BundleError(f"{path}: larger than {MAX_MANIFEST_BYTES >> 20} MiB, the most a manifest may be")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BundleError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    try:
        manifest = json.loads(text)
    except RecursionError:
        raise BundleError(f"{path}: JSON nested deeper than {MAX_MANIFEST_DEPTH} levels") from None
    except ValueError as exc:  # json.JSONDecodeError, and integers beyond the digit limit
        raise BundleError(f"{path}: invalid JSON ({exc})") from None
    if _nesting(manifest, MAX_MANIFEST_DEPTH) > MAX_MANIFEST_DEPTH:
        raise BundleError(f"{path}: JSON nested deeper than {MAX_MANIFEST_DEPTH} levels")
    if not isinstance(manifest, dict):
        raise BundleError(f"{path}: the top level must be a JSON object, got {json_type(manifest)}")
    return manifest


class Bundle:
    """A bundle directory: read with Bundle.load (verifies), write with Bundle.write."""

    def __init__(self, path: Path, manifest: dict) -> None:
        self.path = Path(path)
        self.manifest = manifest
        where = self.path / MANIFEST
        if not isinstance(manifest, dict):
            raise BundleError(f"{where}: the top level must be a JSON object, got {json_type(manifest)}")
        if manifest.get("format") != FORMAT:
            raise BundleError(f"{where}: 'format' is {_short.repr(manifest.get('format'))}, expected {FORMAT!r}")
        if manifest.get("format_version") != FORMAT_VERSION:
            raise BundleError(f"{where}: 'format_version' is {_short.repr(manifest.get('format_version'))}; "
                              f"this package reads {FORMAT_VERSION}")
        model = self._typed("model", _required(manifest, "model", where), dict, "an object")
        for sub in ("vae", "expert"):
            if sub in model:
                self._typed(f"model.{sub}", model[sub], dict, "an object")
        self.model_config = self._parse("model", ModelConfig.from_dict, model)
        embodiment = self._typed("embodiment", _required(manifest, "embodiment", where), dict, "an object")
        self.embodiment = self._parse("embodiment", Embodiment.from_dict, embodiment)
        text = self._typed("text", _required(manifest, "text", where), dict, "an object")
        self.text_template: str = self._typed("text.template", _required(text, "template", where, "text."), str,
                                              "a string")
        self.contexts_file: str = self._file_name("text.contexts_file", text.get("contexts_file", CONTEXTS_FILE))
        self.instructions: dict[str, str] = self._string_map("text.instructions", text.get("instructions", {}),
                                                             MAX_INSTRUCTIONS)
        self.lora_merged: bool = self._typed("lora_merged", manifest.get("lora_merged", False), bool, "true or false")
        self.files: dict[str, str] = self._string_map("files", _required(manifest, "files", where), MAX_FILES)
        for name, digest in self.files.items():
            self._file_name("files", name)
            if not _SHA256.fullmatch(digest):
                raise BundleError(f"{where}: 'files' entry {_short.repr(name)} must be a sha256 (64 hex digits), "
                                  f"got {_short.repr(digest)}")
        self.weights: dict[str, dict] = self._typed("weights", _required(manifest, "weights", where), dict,
                                                    "an object")
        if set(self.weights) != set(PARTS):
            raise BundleError(f"{where}: 'weights' lists {_short.repr(sorted(self.weights))}, expected {sorted(PARTS)}")
        for part, info in self.weights.items():
            self._typed(f"weights.{part}", info, dict, "an object")
            self._file_name(f"weights.{part}.file", _required(info, "file", where, f"weights.{part}."))
        self.onnx: dict[str, dict] = self._typed("onnx", manifest.get("onnx", {}), dict, "an object")
        if len(self.onnx) > MAX_ONNX_EXPORTS:
            raise BundleError(f"{where}: 'onnx' has {len(self.onnx)} entries, more than {MAX_ONNX_EXPORTS}")
        for dtype, entry in self.onnx.items():
            self._check_onnx_entry(f"onnx.{dtype}", entry)
        if "{task}" not in self.text_template:
            raise BundleError(f"{where}: text.template must contain '{{task}}', got {_short.repr(self.text_template)}")
        try:
            self.text_template.format(task="")
        except (IndexError, KeyError, ValueError, AttributeError) as exc:
            raise BundleError(f"{where}: text.template {_short.repr(self.text_template)} has a field other than "
                              f"{{task}} or a stray brace: {type(exc).__name__}: {exc}") from None

    # -- manifest structure: each check names manifest.json and the key --------------------------

    def _typed(self, key: str, value: Any, kind: type, what: str) -> Any:
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            raise BundleError(f"{self.path / MANIFEST}: '{key}' must be {what}, got {json_type(value)}")
        return value

    def _parse(self, key: str, parse: Any, value: dict) -> Any:
        """parse(value), its errors as BundleError with the section named (unless the message names it)."""
        try:
            return parse(value)
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
            msg = f"missing key {_short.repr(exc.args[0])}" if isinstance(exc, KeyError) else str(exc)
            if not msg.startswith(key) and f"'{key}'" not in msg:
                msg = f"{key}: {msg}"
            if len(msg) > MAX_MESSAGE_CHARS:  # other modules quote values whole
                msg = f"{msg[:MAX_MESSAGE_CHARS]}... ({len(msg) - MAX_MESSAGE_CHARS} more characters)"
            raise BundleError(f"{self.path / MANIFEST}: {msg}") from exc

    def _string_map(self, key: str, value: Any, limit: int) -> dict[str, str]:
        """A JSON object of strings, its size bounded first: every entry is later stat-ed, hashed or looked up."""
        self._typed(key, value, dict, "an object")
        if len(value) > limit:
            raise BundleError(f"{self.path / MANIFEST}: '{key}' has {len(value)} entries, more than {limit}")
        for k, v in value.items():
            self._typed(f"{key}[{_short.repr(k)}]", v, str, "a string")
        return dict(value)

    def _file_name(self, key: str, name: Any) -> str:
        self._typed(key, name, str, "a file name")
        if not name or Path(name).name != name or name in (".", ".."):
            raise BundleError(f"{self.path / MANIFEST}: '{key}' entry {_short.repr(name)} is not a file name in "
                              "the bundle")
        return name

    def _check_onnx_entry(self, key: str, entry: Any) -> None:
        """Checked on load, verified or not: the onnx backend reads these fields and looks each file's sha256 up
        in 'files' (its TensorRT cache key), and would otherwise fail there with a bare KeyError."""
        where = self.path / MANIFEST
        self._typed(key, entry, dict, "an object")
        steps = self._typed(f"{key}.steps", _required(entry, "steps", where, f"{key}."), int, "an integer")
        if steps < 1:
            raise BundleError(f"{where}: '{key}.steps' must be at least 1, got {steps}")
        files = [("file", _required(entry, "file", where, f"{key}."))]
        if entry.get("external_data") is not None:
            files.append(("external_data", entry["external_data"]))
        for field_name, name in files:
            self._file_name(f"{key}.{field_name}", name)
            if name not in self.files:
                raise BundleError(f"{where}: '{key}.{field_name}' is {_short.repr(name)}, which 'files' does not list")

    # -- reading ---------------------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | os.PathLike, verify: bool = True) -> Bundle:
        path = Path(path)
        mpath = path / MANIFEST
        if not path.is_dir():
            raise BundleError(f"bundle directory {path} does not exist")
        if not mpath.is_file():
            raise BundleError(f"{mpath}: missing (is {path} a lightwam bundle? build one with `lightwam convert`)")
        inside(path, mpath)
        bundle = cls(path, read_manifest(mpath))
        bundle.check_paths()
        if verify:
            bundle.verify()
        return bundle

    def file_path(self, name: str) -> Path:
        """Path of bundle file `name`; every read goes through here so none can leave the bundle (`inside`)."""
        p = self.path / name
        inside(self.path, p)
        return p

    def check_paths(self) -> None:
        """Every file the manifest names that exists is a regular file inside the bundle.

        Done on every load, verified or not: the backends and the text contexts open these paths
        themselves, and a load without verify (the demo, adding contexts) must not follow a link out
        of the bundle either. Missing files are left to verify and to the reader, which name them.
        """
        names = set(self.files) | {info["file"] for info in self.weights.values()} | {self.contexts_file}
        names |= {e[k] for e in self.onnx.values() for k in ("file", "external_data") if e.get(k) is not None}
        for name in sorted(names):
            p = self.path / name
            if os.path.lexists(p):
                inside(self.path, p)

    @property
    def contexts_path(self) -> Path:
        return self.path / self.contexts_file

    @property
    def known_instructions(self) -> list[str]:
        return sorted(self.instructions)

    def verify(self, hashes: bool = True) -> None:
        """Check files, sha256, tensor names/shapes and dimensions; raise BundleError naming the culprit."""
        self._verify_files(hashes)
        self._verify_weights()
        self._verify_dims()
        self._verify_contexts()

    def _verify_files(self, hashes: bool) -> None:
        required = [w["file"] for w in self.weights.values()] + [self.contexts_file]
        for name in required:
            if name not in self.files:
                raise BundleError(f"{self.path / MANIFEST}: 'files' has no sha256 for {name}")
        for name, digest in self.files.items():
            p = self.file_path(name)
            if hashes:
                actual = sha256_file(p)
                if actual != digest:
                    raise BundleError(
                        f"{p}: sha256 mismatch (manifest says {digest[:16]}..., file is {actual[:16]}...); "
                        "the file is corrupt or was changed after the bundle was written"
                    )

    def _verify_weights(self) -> None:
        try:
            expected = expected_shapes(self.model_config, self.lora_merged)
        except (TypeError, ValueError) as exc:  # what the modules refuse beyond ModelConfig's own checks
            raise BundleError(f"{self.path / MANIFEST}: 'model' does not describe a network this package "
                              f"builds: {str(exc)[:MAX_MESSAGE_CHARS]}") from exc
        for part, info in self.weights.items():
            p = self.file_path(info["file"])
            header = read_safetensors_header(p)
            actual = {k: shape for k, (shape, _) in header.items()}
            missing, mismatched, unexpected = diff_tensors(expected[part], actual)
            if missing or mismatched or unexpected:
                raise BundleError(format_diff(str(p), missing, mismatched, unexpected))
            bad_dtype = sorted(k for k, (_, dt) in header.items() if dt not in FLOAT_ST_DTYPES)
            if bad_dtype:
                raise BundleError(f"{p}: non-float tensors {bad_dtype[:5]}")

    def _verify_dims(self) -> None:
        cfg, emb, where = self.model_config, self.embodiment, self.path / MANIFEST
        if emb.action_dim != cfg.action_dim:
            raise BundleError(
                f"{where}: embodiment.action_names has {emb.action_dim} names but model.action_dim is {cfg.action_dim}"
            )
        if emb.state_dim != cfg.proprio_dim:
            raise BundleError(
                f"{where}: embodiment.state_names has {emb.state_dim} names but model.proprio_dim is {cfg.proprio_dim}"
            )
        if emb.trained_steps > cfg.horizon:
            raise BundleError(
                f"{where}: embodiment.trained_steps {emb.trained_steps} exceeds model.horizon {cfg.horizon}"
            )
        h, w = emb.layout.canvas_hw
        stride = 8 * cfg.patch_size[1]  # VAE spatial factor 8, then 2x2 patches
        if h % stride or w % stride:
            raise BundleError(f"{where}: embodiment.layout canvas {h}x{w} must be a multiple of {stride}")

    def _verify_contexts(self) -> None:
        p = self.file_path(self.contexts_file)
        header = read_safetensors_header(p)
        want = (self.model_config.text_len, self.model_config.text_dim)
        for key, (shape, _) in header.items():
            if tuple(shape) != want:
                raise BundleError(f"{p}: context {key} has shape {list(shape)}, expected {list(want)}")
        for instruction, key in self.instructions.items():
            if key not in header:
                raise BundleError(f"{p}: no context {key[:80]} for instruction {_short.repr(instruction)} "
                                  "(manifest text.instructions)")

    def load_part(self, part: str, device: str | torch.device = "cpu",
                  dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
        sd = load_safetensors(self.file_path(self.weights[part]["file"]), device)
        return {k: v.to(dtype) for k, v in sd.items()} if dtype is not None else sd

    def state_dict(self, device: str | torch.device = "cpu",
                   dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
        """State dict for LightWAMPolicy (prefixes dit./vae./expert./proprio_encoder.)."""
        out: dict[str, torch.Tensor] = {}
        for part in PARTS:
            for k, v in self.load_part(part, device, dtype).items():
                out[f"{part}.{k}"] = v
        return out

    def text_key(self, instruction: str) -> str:
        return prompt_key(instruction, self.text_template)

    def load_contexts(self, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
        """instruction -> [text_len, text_dim] context (padding rows already zero)."""
        raw = load_safetensors(self.file_path(self.contexts_file), device)
        return {ins: raw[key] for ins, key in self.instructions.items()}

    # -- writing ---------------------------------------------------------------------------------

    @classmethod
    def write(
        cls,
        path: str | os.PathLike,
        model_config: ModelConfig,
        embodiment: Embodiment,
        weights: Mapping[str, Mapping[str, TensorSource]],
        contexts: Mapping[str, torch.Tensor] | None = None,
        *,
        template: str = PROMPT_TEMPLATE,
        lora_merged: bool = False,
        source: Mapping[str, Any] | None = None,
        verify: bool = True,
    ) -> Bundle:
        """Write a complete bundle (weights per part, official names) and return it loaded.

        `weights` maps each of PARTS to its tensors (eager or LazyTensor). Contexts map an instruction
        to its [text_len, text_dim] context with padding rows already zeroed. `source` is recorded as
        provenance (input files and their sha256). The written bundle is re-read and verified.
        """
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        if set(weights) != set(PARTS):
            raise ValueError(f"Bundle.write: weights must have parts {sorted(PARTS)}, got {sorted(weights)}")
        files: dict[str, str] = {}
        weights_info: dict[str, dict] = {}
        for part, fname in PARTS.items():
            tensors = weights[part]
            dtypes = sorted({dtype_name(shape_dtype(t)[1]) for t in tensors.values()})
            files[fname] = write_safetensors(path / fname, tensors, {"part": part})
            weights_info[part] = {
                "file": fname,
                "dtype": dtypes[0] if len(dtypes) == 1 else dtypes,
                "tensors": len(tensors),
                "params": int(sum(math.prod(shape_dtype(t)[0]) for t in tensors.values())),
            }
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "model": model_config.to_dict(),
            "embodiment": embodiment.to_dict(),
            "text": {"template": template, "contexts_file": CONTEXTS_FILE, "instructions": {}},
            "weights": weights_info,
            "lora_merged": bool(lora_merged),
            "files": files,
        }
        if source:
            manifest["source"] = dict(source)
        bundle = cls(path, manifest)
        bundle._write_contexts(dict(contexts or {}), {})
        if verify:
            bundle.verify(hashes=False)  # hashes were computed while writing
        return bundle

    def _write_contexts(self, contexts: Mapping[str, torch.Tensor], existing: Mapping[str, torch.Tensor]) -> None:
        want = (self.model_config.text_len, self.model_config.text_dim)
        tensors: dict[str, torch.Tensor] = {}
        for ins, t in existing.items():
            tensors[self.instructions[ins]] = t
        instructions = dict(self.instructions)
        for ins, t in contexts.items():
            t = torch.as_tensor(t)
            if tuple(t.shape) != want:
                raise ValueError(f"context for instruction {ins!r} has shape {list(t.shape)}, expected {list(want)}")
            if not torch.isfinite(t.float()).all():
                raise ValueError(f"context for instruction {ins!r} contains NaN/Inf")
            key = self.text_key(ins)
            tensors[key] = t.contiguous()
            instructions[ins] = key
        digest = write_safetensors(self.contexts_path, tensors, {"template": self.text_template})
        self.instructions = instructions
        self.manifest["text"]["instructions"] = dict(sorted(instructions.items()))
        self.record_files({self.contexts_file: digest})

    def add_text_contexts(self, contexts: Mapping[str, torch.Tensor]) -> None:
        """Add (or replace) instruction contexts and rewrite text_contexts.safetensors + manifest."""
        existing = self.load_contexts() if self.contexts_path.is_file() else {}
        self._write_contexts(contexts, existing)

    def record_files(self, files: Mapping[str, str], section: str | None = None, entry: Mapping[str, Any] | None = None,
                     key: str | None = None) -> None:
        """Record new/changed files with their sha256 (and optionally a manifest section entry), then save."""
        self.files.update(files)
        self.manifest["files"] = dict(sorted(self.files.items()))
        if section is not None and key is not None:
            self.manifest.setdefault(section, {})[key] = dict(entry or {})
            if section == "onnx":
                self.onnx = dict(self.manifest["onnx"])
        self.save_manifest()

    def forget_files(self, names: Iterable[str]) -> None:
        """Drop files (and ONNX entries that use them) from the manifest, e.g. before re-exporting."""
        names = set(names)
        for n in names:
            self.files.pop(n, None)
        self.manifest["files"] = dict(sorted(self.files.items()))
        onnx = {k: v for k, v in self.manifest.get("onnx", {}).items()
                if v.get("file") not in names and v.get("external_data") not in names}
        if "onnx" in self.manifest:
            self.manifest["onnx"] = onnx
            self.onnx = dict(onnx)
        self.save_manifest()

    def save_manifest(self) -> None:
        tmp = self.path / (MANIFEST + ".partial")
        tmp.write_text(dumps_manifest(self.manifest) + "\n")
        os.replace(tmp, self.path / MANIFEST)
