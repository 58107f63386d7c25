"""The whole LightWAMPolicy exports to ONNX (static shapes) and ONNX Runtime reproduces torch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from lightwam_ros.model.config import MODEL_SIZES
from lightwam_ros.model.policy import LightWAMPolicy

pytestmark = pytest.mark.numeric


def test_onnx_export_matches_torch(tmp_path: Path) -> None:
    cfg = MODEL_SIZES["tiny"]
    torch.manual_seed(0)
    policy = LightWAMPolicy(cfg).eval()
    with torch.no_grad():  # make LoRA and adapters non-trivial, then merge as production does
        for name, p in policy.named_parameters():
            if "up_proj" in name:
                p.normal_(0, 0.1)
    policy.merge_lora()
    g = torch.Generator().manual_seed(1)
    canvas = torch.rand(1, 3, 64, 80, generator=g) * 2 - 1
    proprio = torch.randn(1, cfg.proprio_dim, generator=g)
    context = torch.randn(1, cfg.text_len, cfg.text_dim, generator=g)
    with torch.no_grad():
        expected = policy(canvas, proprio, context).numpy()

    path = tmp_path / "policy.onnx"
    torch.onnx.export(policy, (canvas, proprio, context), str(path), dynamo=True,
                      input_names=["canvas", "proprio", "context"], output_names=["actions"])
    model = onnx.load(str(path))
    kinds = {init.data_type for init in model.graph.initializer}
    assert onnx.TensorProto.DOUBLE not in kinds and onnx.TensorProto.COMPLEX128 not in kinds
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (actions,) = session.run(None, {"canvas": canvas.numpy(), "proprio": proprio.numpy(), "context": context.numpy()})
    assert actions.shape == (1, cfg.horizon, cfg.action_dim)
    # ONNX Runtime's kernels vs torch's in float32, on whatever CPU: ~100 rounding steps (eps 1.2e-7)
    assert np.linalg.norm(actions - expected) / np.linalg.norm(expected) < 1e-5
