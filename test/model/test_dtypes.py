"""Dtype names: one spelling for the CLI, the manifest, ONNX file names, logs and the node parameter."""

from __future__ import annotations

import pytest
import torch

from lightwam_ros.config import DType
from lightwam_ros.model.dtypes import DTYPES, dtype_name, parse_dtype


def test_names_round_trip() -> None:
    for name, dtype in DTYPES.items():
        assert dtype_name(dtype) == name and parse_dtype(name) is dtype
    assert dtype_name(torch.bfloat16) == "bfloat16"


def test_the_dtype_parameter_offers_exactly_these_names() -> None:
    # config stays torch-free and model imports nothing from config, so the names are written twice.
    assert [d.value for d in DType] == list(DTYPES)


def test_unknown_name_names_the_option() -> None:
    with pytest.raises(ValueError, match=r"--dtype: unknown dtype 'half'; expected one of \['bfloat16', "):
        parse_dtype("half", "--dtype")
