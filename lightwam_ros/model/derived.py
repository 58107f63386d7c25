"""Buffers that are functions of a module's weights, dtype and device, kept in sync automatically.

Several inference constants never depend on the input: the DiT's t=0 modulation (t_mod), the RoPE
tables, the VAE latent statistics and the expert's step-position sinusoid. Computing them once keeps
the forward pass free of host->device copies and of float64 math. They must follow the module when it
is moved or cast (``.to()``, ``.cuda()``, ``.half()`` all go through ``_apply``) and when new weights
are loaded (``load_state_dict``), and they are recomputed from their exact float64/float32 recipe each
time rather than cast from a previous dtype, so a bf16 -> fp32 round trip never degrades them.
They are non-persistent buffers: state_dict keys stay exactly the official ones.
Code that edits parameters in place (``param.copy_``) must call ``refresh_constants()`` itself.
"""

from __future__ import annotations

from torch import nn


class DerivedConstantsModule(nn.Module):
    """nn.Module whose subclass implements ``refresh_constants()``; it runs after every move/cast/load."""

    def __init__(self) -> None:
        super().__init__()
        self.register_load_state_dict_post_hook(_refresh_after_load)

    def _apply(self, fn, recurse=True):  # torch's private signature
        result = super()._apply(fn, recurse)
        self.refresh_constants()
        return result


def _refresh_after_load(module: nn.Module, incompatible_keys) -> None:
    module.refresh_constants()  # type: ignore[attr-defined]
