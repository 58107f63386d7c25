"""Compute dtypes by name, one way for every place that prints or parses one.

The name (`bfloat16`) is what the user types, what the manifest records per weights file, what an
ONNX export's file name and manifest key carry and what logs and diagnostics show; writing it the
same way everywhere keeps those lookups matching.

The `dtype` node parameter lists the same names in `config` (its DType enum), which stays
torch-free so profiles validate without loading torch; this package imports nothing from this
repository, so that list cannot be derived here: test/model/test_dtypes.py keeps the two equal.
"""

from __future__ import annotations

import torch

# The dtypes the policy runs in (CLI --dtype choices, the node's `dtype` parameter).
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def dtype_name(dtype: torch.dtype) -> str:
    """`torch.bfloat16` -> `bfloat16`, the inverse of parse_dtype."""
    return str(dtype).removeprefix("torch.")


def parse_dtype(name: str, what: str = "dtype") -> torch.dtype:
    """`what` names the option or parameter in the error, since the user has to fix that one."""
    try:
        return DTYPES[name]
    except KeyError:
        raise ValueError(f"{what}: unknown dtype {name!r}; expected one of {sorted(DTYPES)}") from None
