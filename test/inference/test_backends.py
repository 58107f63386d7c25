"""Backends and the pipeline on the tiny demo bundle: torch (unmerged reference, merged), ONNX Runtime.

The reference is LightWAMPolicy.forward with the bundle's weights loaded by hand (unmerged LoRA, float32),
so a backend that drops LoRA/adapters, slices steps wrongly or feeds inputs in the wrong order fails.
GPU tests (`-m gpu`) cover CUDA, CUDA graphs, torch.compile and ONNX Runtime with IO binding; they skip
here without CUDA and run in test/gpu_check.sh.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from lightwam_ros.bundle.errors import BundleError
from lightwam_ros.bundle.format import Bundle
from lightwam_ros.demo.tiny_bundle import DEMO_INSTRUCTIONS, demo_state_dict
from lightwam_ros.inference.backends.base import PolicyIO, open_backend, resolve_device
from lightwam_ros.inference.backends.onnx_backend import OnnxBackend
from lightwam_ros.inference.backends.torch_backend import TorchBackend
from lightwam_ros.inference.bench import BenchConfig, run_bench
from lightwam_ros.inference.onnx_export import export_onnx
from lightwam_ros.inference.pipeline import PolicyInputError, PolicyPipeline
from lightwam_ros.model.config import MODEL_SIZES
from lightwam_ros.model.policy import LightWAMPolicy
from lightwam_ros.text.contexts import UnknownInstructionError

pytestmark = pytest.mark.numeric

CPU = torch.device("cpu")
FP32_EPS = torch.finfo(torch.float32).eps  # 1.2e-7
# ONNX Runtime (MLAS) vs torch (oneDNN/MKL) in float32: two implementations of the whole network, each
# ~1e-6 relative from exact; 1e-4 absolute at an action scale ~2 (~400 fp32 steps) holds on every CPU
# and is far below what a dropped LoRA (> 1e-2) or a mixed-up input order (O(1)) gives.
ORT_ATOL = 1e-4
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="needs a CUDA GPU (run test/gpu_check.sh on a GPU machine)")


@pytest.fixture(scope="module")
def onnx_bundle(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tiny demo bundle with its float32 ONNX export (export rewrites the manifest)."""
    dst = tmp_path_factory.mktemp("onnx") / "tiny"
    shutil.copytree(tiny_bundle, dst)
    export_onnx(dst, torch.float32, CPU)
    return dst


@pytest.fixture(scope="module")
def reference_policy() -> LightWAMPolicy:
    """The demo weights loaded by hand into the network: unmerged LoRA, float32."""
    policy = LightWAMPolicy(MODEL_SIZES["tiny"])
    policy.load_state_dict(demo_state_dict("tiny", seed=0), strict=True)
    return policy.eval()


def _inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(1, 3, 384, 320, generator=g) * 2 - 1, torch.randn(1, 14, generator=g),
            torch.randn(1, 128, 32, generator=g) * 0.3)


# -- torch ------------------------------------------------------------------------------------------


def test_torch_backend_matches_reference_policy(tiny_bundle: Path, reference_policy: LightWAMPolicy) -> None:
    b = Bundle.load(tiny_bundle)
    x = _inputs(1)
    with torch.no_grad():
        ref = reference_policy(*x)[0].numpy()
    unmerged = TorchBackend(b, CPU, torch.float32, merge_lora=False).infer(*x)
    merged = TorchBackend(b, CPU, torch.float32).infer(*x)
    assert unmerged.shape == (32, 14) and unmerged.dtype == np.float32
    # The same network run stage by stage: bit-identical with AVX2 kernels, 2.3e-6 off with the baseline
    # ones (other blockings, other fp32 summation orders). ~100 fp32 steps of the actions' scale covers it.
    scale = float(np.abs(ref).max())
    np.testing.assert_allclose(unmerged, ref, atol=1e-5 * scale, rtol=0)
    np.testing.assert_allclose(merged, ref, atol=1e-4, rtol=0)  # merged weights round differently (~2e-6)
    # LoRA matters in the demo weights: dropping it would be caught.
    no_lora = LightWAMPolicy(b.model_config)
    no_lora.load_state_dict({k: v for k, v in demo_state_dict("tiny").items() if "lora" not in k}, strict=False)
    with torch.no_grad():
        assert np.abs(no_lora.eval()(*x)[0].numpy() - ref).max() > 1e-2


def test_torch_backend_steps_and_stage_timings(tiny_bundle: Path) -> None:
    b = Bundle.load(tiny_bundle)
    x = _inputs(2)
    full = TorchBackend(b, CPU, torch.float32).infer(*x)
    be = TorchBackend(b, CPU, torch.float32, steps=24)
    part = be.infer(*x)
    assert part.shape == (24, 14)
    # 24 rows instead of 32 may change the expert's GEMM blocking and fp32 summation order: 64 rounding
    # steps of the actions' scale (1.4e-5); a step off by one moves the actions by 0.3.
    np.testing.assert_allclose(part, full[:24], atol=64 * FP32_EPS * float(np.abs(full).max()), rtol=0)
    assert set(be.last_timings_ms) == {"vae", "dit", "expert"} and all(v > 0 for v in be.last_timings_ms.values())
    with pytest.raises(ValueError, match="steps must be in 1..32"):
        TorchBackend(b, CPU, torch.float32, steps=33)
    with pytest.raises(ValueError, match=r"backend input canvas: shape \[1, 3, 64, 64\]"):
        be.infer(torch.zeros(1, 3, 64, 64), x[1], x[2])


def test_backend_options_are_checked(tiny_bundle: Path) -> None:
    b = Bundle.load(tiny_bundle)
    with pytest.raises(ValueError, match="cuda_graphs needs a CUDA device"):
        TorchBackend(b, CPU, torch.float32, cuda_graphs=True)
    with pytest.raises(ValueError, match="unknown backend 'tensorflow'"):
        open_backend("tensorflow", b, CPU, torch.float32)
    with pytest.raises(ValueError, match="device: 'tpu' is not a device"):
        resolve_device("tpu")
    with pytest.raises(ValueError, match="device: 'mps' is not supported"):
        resolve_device("mps")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


# -- ONNX -------------------------------------------------------------------------------------------


def test_onnx_export_recorded_and_verified(onnx_bundle: Path) -> None:
    b = Bundle.load(onnx_bundle)  # verifies the .onnx sha256 too
    entry = b.onnx["float32"]
    assert entry["file"] == "policy_float32.onnx" and entry["external_data"] is None
    assert entry["inputs"] == {"canvas": [1, 3, 384, 320], "proprio": [1, 14], "context": [1, 128, 32]}
    assert entry["outputs"] == {"actions": [1, 32, 14]}
    assert entry["max_abs_diff_vs_torch"] < ORT_ATOL and entry["verified_with"] == "CPUExecutionProvider"
    assert "policy_float32.onnx" in b.files


def test_torch_vs_onnx_runtime_fp32(onnx_bundle: Path, reference_policy: LightWAMPolicy) -> None:
    b = Bundle.load(onnx_bundle)
    onnx_be = OnnxBackend(b, CPU, torch.float32)
    assert onnx_be.active_providers == ["CPUExecutionProvider"]
    for seed in (3, 4):
        x = _inputs(seed)
        with torch.no_grad():
            ref = reference_policy(*x)[0].numpy()
        out = onnx_be.infer(*x)
        assert out.shape == (32, 14)
        assert np.abs(out - ref).max() < ORT_ATOL
        np.testing.assert_allclose(out, TorchBackend(b, CPU, torch.float32).infer(*x), atol=ORT_ATOL, rtol=0)
    assert set(onnx_be.last_timings_ms) == {"policy"}
    short = OnnxBackend(b, CPU, torch.float32, steps=10).infer(*x)
    # exact by construction: the same graph (all 32 steps) on the same input in this process, then sliced
    np.testing.assert_array_equal(short, out[:10])


def test_onnx_pipeline_matches_torch_pipeline(onnx_bundle: Path) -> None:
    rng = np.random.default_rng(0)
    images = {c: rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
              for c in ("cam_high", "cam_left_wrist", "cam_right_wrist")}
    state = rng.normal(0, 0.3, 14)
    ins = "place the cup on the coaster"
    with PolicyPipeline.from_bundle(onnx_bundle, backend="onnx", device="cpu") as p_onnx, \
            PolicyPipeline.from_bundle(onnx_bundle, backend="torch", device="cpu") as p_torch:
        a = p_onnx.predict(images, state, ins).actions
        b = p_torch.predict(images, state, ins).actions
    np.testing.assert_allclose(a, b, atol=ORT_ATOL, rtol=0)


def test_onnx_missing_export_and_tampered_file(onnx_bundle: Path, tmp_path: Path) -> None:
    b = Bundle.load(onnx_bundle)
    with pytest.raises(ValueError, match=r"no ONNX export for dtype float16.*lightwam export-onnx"):
        OnnxBackend(b, CPU, torch.float16)
    copy = tmp_path / "b"
    shutil.copytree(onnx_bundle, copy)
    with open(copy / "policy_float32.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(BundleError, match=r"policy_float32\.onnx: sha256 mismatch"):
        Bundle.load(copy)


def test_onnx_external_data_float16(tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The > 2 GB path (weights in policy_<dtype>.onnx.data), forced on the tiny model, in float16."""
    import lightwam_ros.inference.onnx_export as onnx_export

    monkeypatch.setattr(onnx_export, "EXTERNAL_DATA_BYTES", 0)
    copy = tmp_path / "b"
    shutil.copytree(tiny_bundle, copy)
    result = export_onnx(copy, torch.float16, CPU)
    assert set(result.files) == {"policy_float16.onnx", "policy_float16.onnx.data"}
    assert (copy / "policy_float16.onnx.data").stat().st_size > 500_000  # the large weights moved out
    b = Bundle.load(copy)  # both files hashed
    assert b.onnx["float16"]["external_data"] == "policy_float16.onnx.data"
    # fp16 rounds 8000x coarser than fp32 (eps 9.8e-4 vs 1.2e-7), hence bounds 200-500x ORT_ATOL
    assert result.max_abs_diff is not None and result.max_abs_diff < 2e-2  # fp16 graph vs fp16 torch
    x = _inputs(9)
    ref = TorchBackend(b, CPU, torch.float32).infer(*x)
    out = OnnxBackend(b, CPU, torch.float16).infer(*x)
    assert out.dtype == np.float32 and np.abs(out - ref).max() < 5e-2  # fp16 vs fp32 weights
    (copy / "policy_float16.onnx.data").unlink()
    with pytest.raises(BundleError, match=r"policy_float16\.onnx\.data: missing"):
        Bundle.load(copy)


# -- pipeline ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pipe(tiny_bundle: Path):
    with PolicyPipeline.from_bundle(tiny_bundle, device="cpu") as p:
        yield p


def _images(hw=(480, 640), seed=0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    cams = ("cam_high", "cam_left_wrist", "cam_right_wrist")
    return {c: rng.integers(0, 256, (*hw, 3), dtype=np.uint8) for c in cams}


def test_pipeline_chunk(pipe: PolicyPipeline) -> None:
    chunk = pipe.predict(_images(), pipe.neutral_state(), "pick up the red block", stamp_ns=1_700_000_000_000_000_000)
    assert chunk.actions.shape == (32, 14) and chunk.actions.dtype == np.float32
    assert chunk.stamp_ns == 1_700_000_000_000_000_000 and chunk.dt_ns == 20_000_000
    assert chunk.trained_steps == 24 and chunk.executable_steps == 24
    assert {"preprocess", "vae", "dit", "expert", "total"} <= set(chunk.timings_ms)
    assert pipe.last_canvas.shape == (384, 320, 3) and pipe.last_canvas.dtype == np.uint8
    assert sorted(pipe.known_instructions) == sorted(DEMO_INSTRUCTIONS)
    assert 0 < pipe.warmup(1) < 60_000
    other = pipe.predict(_images(), pipe.neutral_state(), "stack the green block on the blue block")
    assert np.abs(other.actions - chunk.actions).max() > 1e-3  # the instruction matters


def test_pipeline_input_errors_name_the_input(pipe: PolicyPipeline) -> None:
    images = _images()
    state = pipe.neutral_state()
    del images["cam_right_wrist"]
    with pytest.raises(PolicyInputError, match="missing image for camera 'cam_right_wrist'"):
        pipe.predict(images, state, "pick up the red block")
    with pytest.raises(PolicyInputError, match="state has 13 values, bundle expects 14"):
        pipe.predict(_images(), state[:13], "pick up the red block")
    bad = state.copy()
    bad[3] = np.nan
    with pytest.raises(PolicyInputError, match="left_forearm_roll"):
        pipe.predict(_images(), bad, "pick up the red block")
    gray = _images()
    gray["cam_high"] = gray["cam_high"][..., 0]
    with pytest.raises(PolicyInputError, match="camera 'cam_high' must be uint8 HxWx3"):
        pipe.predict(gray, state, "pick up the red block")
    with pytest.raises(UnknownInstructionError) as exc:
        pipe.predict(_images(), state, "do a backflip")
    assert "do a backflip" in str(exc.value) and "pick up the red block" in str(exc.value)


def test_bench_on_tiny_bundle(tiny_bundle: Path) -> None:
    result = run_bench(BenchConfig(tiny_bundle, backend="torch", device="cpu", runs=2, warmup=0))
    names = [s.stage for s in result.stages]
    assert names[:4] == ["preprocess", "vae", "dit", "expert"] and "total" in names
    total = result.stage("total")
    assert 0 < total.median_ms <= total.p90_ms <= total.max_ms
    assert result.memory_mb["host RSS process peak"] > 0
    table = result.table()
    assert "median ms" in table and "p90 ms" in table and "backend torch" in table
    assert json.loads(json.dumps(result.to_dict()))["runs"] == 2
    with pytest.raises(ValueError, match="--compile, --cuda-graphs and --no-merge-lora apply to --backend torch"):
        BenchConfig(tiny_bundle, backend="onnx", compile=True)


# -- GPU --------------------------------------------------------------------------------------------


@pytest.mark.gpu
@needs_cuda
def test_cuda_eager_graphs_and_compile_match_cpu(tiny_bundle: Path) -> None:
    b = Bundle.load(tiny_bundle)
    cuda = torch.device("cuda")
    xs = [_inputs(5), _inputs(6)]
    ref = [TorchBackend(b, CPU, torch.float32).infer(*x) for x in xs]
    eager = TorchBackend(b, cuda, torch.float32)
    graphs = TorchBackend(b, cuda, torch.float32, cuda_graphs=True)
    graphs.warmup()
    assert graphs.graph_captured, "CUDA graph capture failed"
    compiled = TorchBackend(b, cuda, torch.float32, compile=True)
    compiled.warmup()
    for x, r in zip(xs, ref):
        xc = tuple(t.to(cuda) for t in x)
        for be in (eager, graphs, compiled):
            np.testing.assert_allclose(be.infer(*xc), r, atol=5e-3, rtol=0)  # TF32 convs allowed by default
        np.testing.assert_allclose(graphs.infer(*xc), eager.infer(*xc), atol=1e-5, rtol=0)
    bf16 = TorchBackend(b, cuda, torch.bfloat16).infer(*(t.to(cuda) for t in xs[0]))
    assert np.abs(bf16 - ref[0]).max() < 0.1


@pytest.mark.gpu
@needs_cuda
def test_onnx_cuda_io_binding_matches_torch(onnx_bundle: Path) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip(f"onnxruntime {ort.__version__} has no CUDAExecutionProvider (install onnxruntime-gpu)")
    b = Bundle.load(onnx_bundle)
    cuda = torch.device("cuda")
    be = OnnxBackend(b, cuda, torch.float32, providers=("CUDAExecutionProvider", "CPUExecutionProvider"))
    assert be.active_providers[0] == "CUDAExecutionProvider"
    for seed in (7, 8):  # the static bound buffers must take each new input
        x = _inputs(seed)
        ref = TorchBackend(b, CPU, torch.float32).infer(*x)
        np.testing.assert_allclose(be.infer(*(t.to(cuda) for t in x)), ref, atol=5e-3, rtol=0)


@pytest.mark.gpu
@needs_cuda
def test_pipeline_on_cuda(tiny_bundle: Path) -> None:
    with PolicyPipeline.from_bundle(tiny_bundle, device="cuda", dtype="float32") as p, \
            PolicyPipeline.from_bundle(tiny_bundle, device="cpu") as q:
        a = p.predict(_images(), p.neutral_state(), "pick up the red block").actions
        c = q.predict(_images(), q.neutral_state(), "pick up the red block").actions
    np.testing.assert_allclose(a, c, atol=5e-3, rtol=0)


def test_policy_io_example_inputs_are_deterministic(tiny_bundle: Path) -> None:
    io = PolicyIO.from_bundle(Bundle.load(tiny_bundle, verify=False))
    a, b = io.example_inputs(), io.example_inputs()
    assert all(torch.equal(x, y) for x, y in zip(a, b))  # the same seeded generator: exact by construction
    assert a[0].min() >= -1 and a[0].max() <= 1
