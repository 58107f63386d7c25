"""Bundle write/load round trip and verification failures (each message must name the file and key).

The streaming safetensors writer is checked against the reference `safetensors` library (it must read
what we write, with identical tensors and the sha256 we report); the demo weights against fixed
golden numbers, so a change in the demo generator (which the demo, replay tests and bag fixtures rely
on) cannot slip through.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from lightwam_ros.bundle.errors import BundleError
from lightwam_ros.bundle.format import MANIFEST, PARTS, Bundle, Embodiment
from lightwam_ros.bundle.safetensors_io import LazyTensor, write_safetensors
from lightwam_ros.demo.tiny_bundle import DEMO_INSTRUCTIONS, demo_embodiment, demo_state_dict, write_demo_bundle
from lightwam_ros.model.config import MODEL_SIZES
from lightwam_ros.model.policy import LightWAMPolicy
from lightwam_ros.text.prompts import prompt_key


@pytest.fixture()
def bundle_copy(tiny_bundle: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "b"
    shutil.copytree(tiny_bundle, dst)
    return dst


def _edit_manifest(path: Path, edit) -> None:
    m = json.loads((path / MANIFEST).read_text())
    edit(m)
    (path / MANIFEST).write_text(json.dumps(m))


# -- writer ------------------------------------------------------------------------------------------


def test_streaming_writer_matches_reference_library(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(3)
    tensors = {
        "a.weight": torch.randn(5, 7, generator=g),
        "b": torch.randn(3, generator=g).to(torch.bfloat16),
        "c.half": torch.randn(2, 2, 2, generator=g).to(torch.float16),
        "empty": torch.zeros(0, 4),
        "lazy": LazyTensor((4, 3), torch.float32, lambda: torch.arange(12, dtype=torch.float32).view(4, 3)),
    }
    path = tmp_path / "x.safetensors"
    digest = write_safetensors(path, tensors, {"part": "test"})
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    back = load_file(str(path))
    assert set(back) == set(tensors)
    for k, v in tensors.items():
        ref = v.materialize() if isinstance(v, LazyTensor) else v
        assert back[k].dtype == ref.dtype and torch.equal(back[k], ref), k
    # The reference writer reads back identically through our loader path as well.
    save_file({k: v for k, v in back.items()}, str(tmp_path / "ref.safetensors"))
    assert load_file(str(tmp_path / "ref.safetensors"))["lazy"].tolist()[3] == [9.0, 10.0, 11.0]


def test_lazy_tensor_declared_shape_is_enforced(tmp_path: Path) -> None:
    bad = LazyTensor((2, 2), torch.float32, lambda: torch.zeros(3))
    with pytest.raises(ValueError, match="declared"):
        write_safetensors(tmp_path / "bad.safetensors", {"x": bad})
    assert not (tmp_path / "bad.safetensors").exists()  # nothing half-written under the real name


# -- round trip --------------------------------------------------------------------------------------


def test_demo_bundle_round_trip(tiny_bundle: Path) -> None:
    b = Bundle.load(tiny_bundle)  # verify=True: hashes, names, shapes, dims
    assert b.model_config == MODEL_SIZES["tiny"]
    assert b.embodiment == demo_embodiment()
    assert b.embodiment.cameras == ("cam_high", "cam_left_wrist", "cam_right_wrist")
    assert b.embodiment.layout.canvas_hw == (384, 320)
    assert b.embodiment.trained_steps == 24 and b.embodiment.action_rate_hz == 50.0
    assert b.embodiment.action_names[:7] == ("left_waist", "left_shoulder", "left_elbow", "left_forearm_roll",
                                             "left_wrist_angle", "left_wrist_rotate", "left_gripper")
    assert b.embodiment.action_names[7] == "right_waist"
    assert set(b.files) == set(PARTS.values()) | {"text_contexts.safetensors"}
    for name, digest in b.files.items():
        assert hashlib.sha256((tiny_bundle / name).read_bytes()).hexdigest() == digest, name

    # Weights load strictly into the network and equal the generator's tensors.
    policy = LightWAMPolicy(b.model_config)
    policy.load_state_dict(b.state_dict(), strict=True)
    ref = demo_state_dict("tiny", seed=0)
    for k, v in policy.state_dict().items():
        assert torch.equal(v, ref[k]), k

    # Contexts: keys are sha256 of the templated prompt; rows past the token count are zero.
    contexts = b.load_contexts()
    assert set(contexts) == set(DEMO_INSTRUCTIONS)
    for ins, n_tokens in DEMO_INSTRUCTIONS.items():
        assert b.instructions[ins] == prompt_key(ins)
        ctx = contexts[ins]
        assert ctx.shape == (128, 32)
        assert torch.all(ctx[n_tokens:] == 0) and torch.all(ctx[:n_tokens].abs().sum(-1) > 0), ins


def test_demo_weights_golden() -> None:
    """Fixed numbers of the seed-0 tiny generator (changing the generator changes every demo artifact)."""
    sd = demo_state_dict("tiny", seed=0)
    assert len(sd) == 372
    total = sum(v.numel() for v in sd.values())
    assert total == 516698
    # LoRA and adapter up-projections are non-zero (unlike a fresh training init).
    assert sd["dit.blocks.0.self_attn.lora_q.up_proj.weight"].abs().sum() > 0
    assert sd["dit.wam_adapters.1.up_proj.weight"].abs().sum() > 0
    assert sd["dit.blocks.0.norm3.weight"].mean().item() == pytest.approx(1.0, abs=0.05)
    assert float(sd["proprio_encoder.weight"][0, 0]) == pytest.approx(GOLDEN_PROPRIO_00, abs=1e-6)
    assert float(sd["expert.output.2.weight"].abs().sum()) == pytest.approx(GOLDEN_OUTPUT_ABS_SUM, rel=1e-5)


GOLDEN_PROPRIO_00 = -0.1324714869260788  # recorded from the seed-0 generator when it was written
GOLDEN_OUTPUT_ABS_SUM = 90.49330139160156


def test_same_seed_same_bundle_other_seed_differs(tmp_path: Path, tiny_bundle: Path) -> None:
    again = write_demo_bundle(tmp_path / "again", "tiny", seed=0)
    other = write_demo_bundle(tmp_path / "other", "tiny", seed=1)
    first = Bundle.load(tiny_bundle, verify=False)
    assert again.files == first.files
    assert all(other.files[f] != first.files[f] for f in PARTS.values())


def test_embodiment_dict_round_trip_and_validation() -> None:
    emb = demo_embodiment()
    assert Embodiment.from_dict(json.loads(json.dumps(emb.to_dict()))) == emb
    d = emb.to_dict()
    d["normalization"]["action"]["mean"] = d["normalization"]["action"]["mean"][:13]
    with pytest.raises(ValueError, match=r"normalization\.action"):
        Embodiment.from_dict(d)
    d = emb.to_dict()
    d["cameras"] = ["cam_high", "cam_right_wrist", "cam_left_wrist"]
    with pytest.raises(ValueError, match="cameras"):
        Embodiment.from_dict(d)


def test_add_text_contexts_keeps_bundle_verifiable(bundle_copy: Path) -> None:
    b = Bundle.load(bundle_copy)
    new = torch.zeros(128, 32)
    new[:3] = 1.5
    b.add_text_contexts({"wave at the camera": new})
    again = Bundle.load(bundle_copy)  # hash of the rewritten contexts file recorded
    ctx = again.load_contexts()
    assert torch.equal(ctx["wave at the camera"], new)
    assert set(ctx) == set(DEMO_INSTRUCTIONS) | {"wave at the camera"}


# -- verification failures ---------------------------------------------------------------------------


def test_wrong_sha256_names_the_file(bundle_copy: Path) -> None:
    p = bundle_copy / "expert.safetensors"
    data = bytearray(p.read_bytes())
    data[-1] ^= 0xFF  # flip bits of the last weight byte: header still valid
    p.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"expert\.safetensors: sha256 mismatch"):
        Bundle.load(bundle_copy)
    Bundle.load(bundle_copy, verify=False)  # reading the manifest alone still works


def test_missing_file_names_the_file(bundle_copy: Path) -> None:
    (bundle_copy / "vae_encoder.safetensors").unlink()
    with pytest.raises(BundleError, match=r"vae_encoder\.safetensors: missing"):
        Bundle.load(bundle_copy)


def test_files_outside_the_bundle_are_refused(bundle_copy: Path) -> None:
    _edit_manifest(bundle_copy, lambda m: m["files"].update({"../secret": "0" * 64}))
    with pytest.raises(BundleError, match=r"'files' entry '\.\./secret' is not a file name in the bundle"):
        Bundle.load(bundle_copy)


def test_missing_manifest_and_bad_version(bundle_copy: Path, tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=r"manifest\.json: missing"):
        Bundle.load(tmp_path)
    _edit_manifest(bundle_copy, lambda m: m.update(format_version=99))
    with pytest.raises(BundleError, match=r"manifest\.json: 'format_version' is 99"):
        Bundle.load(bundle_copy)


def test_model_dims_disagreeing_with_weights_name_file_and_key(bundle_copy: Path) -> None:
    def edit(m: dict) -> None:
        m["model"]["expert"]["trunk_dim"] = 96

    _edit_manifest(bundle_copy, edit)
    with pytest.raises(BundleError) as exc:
        Bundle.load(bundle_copy)
    msg = str(exc.value)
    assert "expert.safetensors" in msg and "wrong shape" in msg
    assert "output.2.weight: shape [14, 64], expected [14, 96]" in msg


def test_embodiment_dims_disagreeing_with_model(bundle_copy: Path) -> None:
    def edit(m: dict) -> None:
        emb = m["embodiment"]
        emb["action_names"] = emb["action_names"][:13]
        for k in emb["normalization"]["action"]:
            emb["normalization"]["action"][k] = emb["normalization"]["action"][k][:13]

    _edit_manifest(bundle_copy, edit)
    with pytest.raises(BundleError, match=r"manifest\.json: embodiment\.action_names has 13 names but "
                                          r"model\.action_dim is 14"):
        Bundle.load(bundle_copy)


def test_tensor_with_wrong_shape_names_file_and_key(bundle_copy: Path) -> None:
    p = bundle_copy / "proprio_encoder.safetensors"
    sd = load_file(str(p))
    sd["weight"] = sd["weight"][:, :13].contiguous()
    sd["extra.bias"] = torch.zeros(2)
    digest = write_safetensors(p, sd)
    _edit_manifest(bundle_copy, lambda m: m["files"].update({"proprio_encoder.safetensors": digest}))
    with pytest.raises(BundleError) as exc:
        Bundle.load(bundle_copy)
    msg = str(exc.value)
    assert "proprio_encoder.safetensors" in msg
    assert "weight: shape [32, 13], expected [32, 14]" in msg
    assert "unexpected (1)" in msg and "extra.bias" in msg


def test_context_without_tensor_names_instruction(bundle_copy: Path) -> None:
    _edit_manifest(bundle_copy, lambda m: m["text"]["instructions"].update({"do a backflip": "0" * 64}))
    with pytest.raises(BundleError, match=r"text_contexts\.safetensors: no context 0+ for instruction 'do a backflip'"):
        Bundle.load(bundle_copy)
