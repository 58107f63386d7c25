"""Malformed manifest values are refused on load with an error naming manifest.json and the key,
at once, before anything is sized by them.

Each case failed differently before the bounds existed: ``num_heads: 0`` raised ZeroDivisionError
(not a BundleError, so no file or key named), a template with a second field raised IndexError when
the first prompt was formatted, 100000 layers spent minutes enumerating tensor shapes, and 2^40-wide
dims or a 2^20-pixel canvas were accepted until something tried to allocate them.
"""

from __future__ import annotations

import json
import shutil
import time

import pytest

from lightwam_ros.bundle.errors import BundleError
from lightwam_ros.bundle.format import MANIFEST, Bundle

CASES = {
    "num_heads_zero": (lambda m: m["model"].update(num_heads=0), "model.num_heads"),
    "layers_100k": (lambda m: m["model"].update(num_layers=100001, adapter_layers=[1, 2, 100000]),
                    "model.num_layers"),
    "dim_2_40": (lambda m: m["model"].update(dim=2**40), "model.dim"),
    "horizon_1e9": (lambda m: m["model"].update(horizon=10**9), "model.horizon"),
    "float_dim": (lambda m: m["model"].update(ffn_dim=128.5), "model.ffn_dim"),
    "adapter_layer_string": (lambda m: m["model"].update(adapter_layers=[1, "2", 3]), "model.adapter_layers"),
    "negative_lora_layer": (lambda m: m["model"].update(lora_layers=[-1, 0]), "model.lora_layers"),
    "vae_dim_mult_deep": (lambda m: m["model"]["vae"].update(dim_mult=[1] * 50), "model.vae.dim_mult"),
    "expert_queries": (lambda m: m["model"]["expert"].update(num_queries=10**7), "model.expert.num_queries"),
    "canvas_2_20": (lambda m: m["embodiment"]["layout"].update(canvas_hw=[2**20, 2**20]), "canvas_hw"),
    "template_extra_field": (lambda m: m["text"].update(template="{task} {0}"), "text.template"),
    "template_stray_brace": (lambda m: m["text"].update(template="{task} }"), "text.template"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_malformed_manifest_value_is_named_and_refused_at_once(tiny_bundle, tmp_path, case) -> None:
    mutate, key = CASES[case]
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    manifest = json.loads((bundle / MANIFEST).read_text())
    mutate(manifest)
    (bundle / MANIFEST).write_text(json.dumps(manifest))
    t0 = time.monotonic()
    with pytest.raises(BundleError) as err:
        Bundle.load(bundle)
    assert time.monotonic() - t0 < 30  # a bound on work, not a speed: the 100k-layer case ran for minutes
    assert str(bundle / MANIFEST) in str(err.value) and key in str(err.value), str(err.value)


def test_the_shipped_configurations_are_inside_the_bounds() -> None:
    from lightwam_ros.model.config import MODEL_SIZES

    for cfg in MODEL_SIZES.values():
        assert cfg.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
