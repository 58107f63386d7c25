"""Runtime parameter changes to a configured node, all or nothing.

API
- ``apply_updates(config, changes, bundle=None) -> UpdateResult`` -- runtime parameter changes;
  read-only parameters are refused with the reason (``UpdateResult.ok``, ``.reason``).

The one place that decides what may change while the node runs: the table marks the runtime
parameters, and the merged set is validated the way configure validates it (from_params, then
validate_against_bundle), so a change cannot reach a state that configure would refuse.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lightwam_ros.config.bundle_check import BundleInfo, validate_against_bundle
from lightwam_ros.config.parameters import (
    RUNTIME_PARAMETERS,
    SPECS,
    ConfigError,
    _checked_value,
    _is_ros_builtin,
    _unknown,
)
from lightwam_ros.config.policy import PolicyConfig, from_params


@dataclass(frozen=True)
class UpdateResult:
    """Outcome of a runtime parameter change: the new config, or why it was refused."""

    config: PolicyConfig | None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.config is not None


def apply_updates(current: PolicyConfig, changes: Mapping[str, Any],
                  bundle: BundleInfo | None = None) -> UpdateResult:
    """Validate a change set against the running config, all or nothing.

    Parameters outside RUNTIME_PARAMETERS (bundle, backend, device, dtype, topics, names, rates of
    timers, output mode, text encoder) are refused while configured, unless the value is unchanged:
    they shape publishers, subscriptions, timers or the loaded model, which a running node cannot
    swap safely. The merged parameter set is then re-validated (and checked against the bundle when
    given), so e.g. safety arrays must keep the action dim. Map ``reason`` to
    SetParametersResult(successful=False, reason=...).
    """
    for name, value in changes.items():
        if _is_ros_builtin(name):
            continue
        if name not in SPECS:
            return UpdateResult(None, str(_unknown(name)))
        if name not in RUNTIME_PARAMETERS:
            try:
                unchanged = _checked_value(SPECS[name], value) == current.params.get(name)
            except ConfigError:
                unchanged = False
            if not unchanged:
                return UpdateResult(None, f"parameter '{name}': read-only while the node is configured "
                                          "(deactivate, clean up and configure again to change it)")
    merged = {**current.params, **{k: v for k, v in changes.items() if not _is_ros_builtin(k)}}
    try:
        cfg = from_params(merged)
        if bundle is not None:
            validate_against_bundle(cfg, bundle)
    except ConfigError as e:
        return UpdateResult(None, str(e))
    return UpdateResult(cfg)
