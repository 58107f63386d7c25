"""Export the policy graph of a bundle to ONNX and check it against torch (`lightwam export-onnx`).

The graph is exactly LightWAMPolicy.forward with LoRA merged: inputs canvas [1,3,H,W] float32 in [-1,1],
proprio [1,P] float32 (normalized, clamped), context [1,text_len,text_dim] float32 (padding rows zero);
output actions [1,horizon,A] float32 (normalized). All shapes are static (batch 1, the bundle's canvas),
which is what TensorRT and CUDA graphs want. The weights run in the export dtype; inputs are cast
inside the graph, so every backend feeds float32 and reads float32 whatever the dtype.

Files land inside the bundle as policy_<dtype>.onnx (+ policy_<dtype>.onnx.data when the weights
exceed protobuf's 2 GB limit), and the manifest records them under "onnx" with their sha256 and the
measured max abs difference to torch, so a corrupt or stale export fails verification like any weight.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lightwam_ros.bundle.format import Bundle
from lightwam_ros.bundle.safetensors_io import sha256_file
from lightwam_ros.inference.backends.base import PolicyIO
from lightwam_ros.inference.backends.torch_backend import load_policy
from lightwam_ros.model.dtypes import dtype_name

log = logging.getLogger(__name__)

INPUT_NAMES = ("canvas", "proprio", "context")
OUTPUT_NAME = "actions"
# Below protobuf's hard 2 GiB message limit with margin for the graph itself.
EXTERNAL_DATA_BYTES = 1_800_000_000


def onnx_file_name(dtype: torch.dtype) -> str:
    return f"policy_{dtype_name(dtype)}.onnx"


class PolicyGraph(nn.Module):
    """forward(canvas, proprio, context) -> actions with the step count baked in (static export)."""

    def __init__(self, policy: nn.Module, steps: int) -> None:
        super().__init__()
        self.policy = policy
        self.steps = steps

    def forward(self, canvas: torch.Tensor, proprio: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return self.policy(canvas, proprio, context, self.steps)  # (1, steps, A) float32


@dataclass(frozen=True)
class ExportResult:
    path: Path
    files: dict[str, str]  # file name -> sha256
    max_abs_diff: float | None  # ONNX Runtime vs torch on the example inputs; None if it could not run
    verified_with: str  # ORT provider used for the check, or why it was not checked
    seconds: float


def _quiet_exporter_logs() -> None:
    # The dynamo exporter warns once per skipped constant fold (hundreds for the full model) and about
    # torchvision ops this graph does not use; neither is actionable.
    for name in ("onnxscript", "onnx_ir", "torch.onnx"):
        logging.getLogger(name).setLevel(logging.ERROR)


def ort_check(path: Path, inputs: tuple[torch.Tensor, ...], reference: np.ndarray,
              device: torch.device) -> tuple[float | None, str]:
    """Run the exported file once in ONNX Runtime; max abs diff to the torch reference."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    provider = "CUDAExecutionProvider" if device.type == "cuda" and "CUDAExecutionProvider" in available \
        else "CPUExecutionProvider"
    try:
        so = ort.SessionOptions()
        so.log_severity_level = 3
        sess = ort.InferenceSession(str(path), so, providers=[provider])
        out = sess.run([OUTPUT_NAME], {n: t.detach().cpu().numpy() for n, t in zip(INPUT_NAMES, inputs)})[0]
    except Exception as exc:  # noqa: BLE001 - e.g. ORT's CPU provider has no kernel for some float16/bfloat16 op
        return None, f"not verified: {provider} could not run it ({str(exc).splitlines()[0][:200]})"
    return float(np.max(np.abs(out.astype(np.float64) - reference.astype(np.float64)))), provider


def export_onnx(bundle: Bundle | str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
                opset: int | None = None, verify: bool = True) -> ExportResult:
    """Export, verify against torch, write into the bundle and record it in the manifest."""
    bundle = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle)
    device = torch.device(device)
    io = PolicyIO.from_bundle(bundle)
    t0 = time.perf_counter()
    policy = load_policy(bundle, device, dtype, merge_lora=True)
    graph = PolicyGraph(policy, io.steps).eval()
    inputs = io.example_inputs(device)
    with torch.inference_mode():
        reference = graph(*inputs).float().cpu().numpy()
    param_bytes = sum(p.numel() * p.element_size() for p in policy.parameters())
    external = param_bytes > EXTERNAL_DATA_BYTES
    name = onnx_file_name(dtype)
    path = bundle.path / name
    data_name = name + ".data"
    for stale in (path, bundle.path / data_name):
        stale.unlink(missing_ok=True)
    bundle.forget_files([name, data_name])
    _quiet_exporter_logs()
    log.info("exporting %s (%s, %.0f MB of weights%s) ...", path, dtype_name(dtype), param_bytes / 2**20,
             ", external data" if external else "")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch-internal deprecation notices during tracing
        program = torch.onnx.export(graph, inputs, None, input_names=list(INPUT_NAMES),
                                    output_names=[OUTPUT_NAME], opset_version=opset, dynamo=True,
                                    external_data=external, verbose=False)
    program.save(str(path), external_data=external)
    files = {name: sha256_file(path)}
    if external:
        data = bundle.path / data_name
        if not data.is_file():
            raise RuntimeError(f"ONNX export wrote no external data file {data}")
        files[data_name] = sha256_file(data)
    del program
    max_diff, verified_with = (None, "not verified (--no-verify)")
    if verify:
        max_diff, verified_with = ort_check(path, inputs, reference, device)
    seconds = time.perf_counter() - t0
    import onnx

    entry = {
        "file": name,
        "external_data": data_name if external else None,
        "opset": int(onnx.load(str(path), load_external_data=False).opset_import[0].version),
        "dtype": dtype_name(dtype),
        "steps": io.steps,
        "inputs": {"canvas": [1, 3, *io.canvas_hw], "proprio": [1, io.proprio_dim],
                   "context": [1, io.text_len, io.text_dim]},
        "outputs": {OUTPUT_NAME: [1, io.steps, io.action_dim]},
        "io_dtype": "float32",
        "lora_merged": True,
        "max_abs_diff_vs_torch": max_diff,
        "verified_with": verified_with,
        "exported_on": str(device),
        "torch_version": torch.__version__,
    }
    bundle.record_files(files, section="onnx", key=dtype_name(dtype), entry=entry)
    log.info("ONNX %s written in %.1f s; max abs diff vs torch: %s (%s)", name, seconds,
             "n/a" if max_diff is None else f"{max_diff:.3g}", verified_with)
    return ExportResult(path, files, max_diff, verified_with, seconds)
