"""Bad bundles and bad model outputs, on the real PolicyNode (test/support/fault_sim.py harness).

- A bundle with a wrong sha256, a missing file, or dims that disagree with the profile fails
  configure with exactly one error naming the file / parameter; the node stays unconfigured.
- A model whose output is NaN or far beyond the limits (the expert's last bias patched, the bundle
  re-hashed so it still verifies) has every chunk refused: the robot holds where it is,
  diagnostics say chunk_refused with the reason (ERROR once refusals persist) and the log says it
  once, not once per chunk.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import rclpy
from fault_sim import configure_only, start
from rclpy.lifecycle import TransitionCallbackReturn

from lightwam_ros.bundle.format import Bundle
from lightwam_ros.bundle.safetensors_io import load_safetensors, sha256_file, write_safetensors
from lightwam_ros.control.safety import HoldReason
from lightwam_ros.demo.synthetic import joint_positions

EXPERT = "expert.safetensors"
OUTPUT_BIAS = "output.2.bias"  # the expert's last layer: one bias per action dim


def _patched_bundle(src: Path, dst: Path, value: float) -> Path:
    """Copy of the bundle whose expert output bias is `value`, re-hashed through the Bundle API."""
    shutil.copytree(src, dst)
    tensors = load_safetensors(dst / EXPERT)
    assert OUTPUT_BIAS in tensors
    tensors[OUTPUT_BIAS] = tensors[OUTPUT_BIAS].clone().fill_(value)
    write_safetensors(dst / EXPERT, tensors)
    bundle = Bundle.load(dst, verify=False)
    bundle.record_files({EXPERT: sha256_file(dst / EXPERT)})
    Bundle.load(dst, verify=True)  # verifies: the refusal must come from the node's output check
    return dst


@pytest.mark.parametrize("value,fragment", [(float("nan"), "non-finite"), (1e6, "beyond the limits")])
def test_bad_model_output_is_refused_and_the_robot_holds(tiny_bundle, tmp_path, value, fragment) -> None:
    bundle = _patched_bundle(tiny_bundle, tmp_path / "bad", value)
    sim = start(bundle, name=f"lw_f_out_{'nan' if value != value else 'huge'}")
    try:
        sim.run(2.0)
        assert len(sim.worker.records) >= 2 and all(r.chunk is not None for r in sim.worker.records)
        start_pose = joint_positions(0.0, 14)
        after_first = [tk for tk in sim.ticks if tk.t_ns > sim.worker.records[0].ready_ns]
        assert after_first and all(tk.hold is HoldReason.CHUNK_REFUSED for tk in after_first)
        for tk in sim.ticks:  # never anything but the measured start pose
            assert tk.hold is not None
            np.testing.assert_array_equal(tk.command, start_pose)
        control = sim.last_status("control")
        values = sim.status_values("control")
        # every chunk refused: ERROR from chunk.refusal_error_count (3) in a row, saying what to check
        assert control.level == b"\x02" and values["hold"] == "chunk_refused"
        assert "persistently refused" in control.message and "safety.position_min/max" in control.message
        assert fragment in values["last_error"] and int(values["safety.refused"]) >= 3
        assert int(values["refusals.consecutive"]) == int(values["safety.refused"])
        # said once, then counted into at most one line per REPEAT_LOG_PERIOD_S (30 s): not one per chunk
        refusals = [m for m, _ in sim.log.errors() if m.startswith("chunk refused")]
        assert len(refusals) == 1 and fragment in refusals[0]
    finally:
        sim.close()


def _missing_file(src: Path, dst: Path) -> tuple[Path, dict, tuple[str, ...]]:
    shutil.copytree(src, dst)
    (dst / "vae_encoder.safetensors").unlink()
    return dst, {}, ("vae_encoder.safetensors",)


def _wrong_sha(src: Path, dst: Path) -> tuple[Path, dict, tuple[str, ...]]:
    shutil.copytree(src, dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    manifest["files"]["dit.safetensors"] = "0" * 64
    (dst / "manifest.json").write_text(json.dumps(manifest))
    return dst, {}, ("dit.safetensors", "sha256")


def _dims_disagree(src: Path, dst: Path) -> tuple[Path, dict, tuple[str, ...]]:
    from node_harness import demo_parameters

    p = demo_parameters(src)  # a 7-joint (one-arm) profile against the 14-dim bundle
    overrides = {"joints__names": p["joints.names"][:7], "safety__position_min": p["safety.position_min"][:7],
                 "safety__position_max": p["safety.position_max"][:7], "safety__max_step": p["safety.max_step"][:7]}
    return src, overrides, ("joints.names", "7")


@pytest.mark.parametrize("case", [_missing_file, _wrong_sha, _dims_disagree], ids=["missing", "sha256", "dims"])
def test_bad_bundle_fails_configure_with_one_message(tiny_bundle, tmp_path, case) -> None:
    bundle, overrides, expect = case(tiny_bundle, tmp_path / "b")
    node, log, ctx, result = configure_only(bundle, f"lw_f_cfg_{case.__name__.strip('_')}", **overrides)
    try:
        assert result == TransitionCallbackReturn.FAILURE
        errors = log.errors()
        assert len(errors) == 1, errors
        message = errors[0][0]
        assert message.startswith("configure failed:")
        for word in expect:
            assert word in message, (word, message)
        assert node.controller is None
        assert node.lifecycle_state() == "unconfigured"
    finally:
        node.destroy_node()
        rclpy.try_shutdown(context=ctx)


def test_runtime_parameter_change_takes_effect_or_is_rejected_with_the_reason(tiny_bundle) -> None:
    """Through the node's parameter path (PolicyBridge.update_parameters, which the node's
    set-parameters callback calls): a smaller max_step caps the very next commands; a wrong-length
    one is refused naming the parameter."""
    sim = start(tiny_bundle, name="lw_f_params")
    try:
        sim.run(1.0)
        ok, why = sim.set_parameters(safety__max_step=[0.01] * 3)
        assert not ok and "safety.max_step" in why
        ok, why = sim.set_parameters(bundle="/elsewhere")
        assert not ok and "bundle" in why
        small = [0.002] * 14
        ok, why = sim.set_parameters(safety__max_step=small)
        assert ok, why
        n = len(sim.ticks)
        sim.run(1.0)
        cmds = np.stack([tk.command for tk in sim.ticks[n - 1:] if tk.command is not None])
        assert np.abs(np.diff(cmds, axis=0)).max() <= 0.002 + 1e-12
        assert sim.controller.config.safety.max_step == tuple(small)
    finally:
        sim.close()
