"""The configuration against the loaded bundle: the checks that need the model's manifest.

API
- ``BundleInfo`` (``BundleInfo.from_manifest(manifest)``) -- what the configuration must agree with:
  the embodiment's cameras, state and action names, trained_steps and action rate.
- ``validate_against_bundle(config, info) -> list[str]`` -- warnings; raises ``ConfigError`` naming
  the parameter on a mismatch.

Apart from from_params because the bundle is known only when the node configures: a profile is
validated without one, and these checks run at configure and again on every runtime change
(updates.py).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lightwam_ros.config.parameters import ConfigError
from lightwam_ros.config.policy import PolicyConfig


@dataclass(frozen=True)
class BundleInfo:
    """What the configuration must agree with, read from the bundle manifest's embodiment."""

    cameras: tuple[str, ...]
    state_names: tuple[str, ...]
    action_names: tuple[str, ...]
    trained_steps: int
    action_rate_hz: float | None = None

    @property
    def action_dim(self) -> int:
        return len(self.action_names)

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> BundleInfo:
        """From a bundle manifest.json dict (its "embodiment" section)."""
        emb = manifest["embodiment"]
        rate = emb.get("action_rate_hz")
        return cls(tuple(emb["cameras"]), tuple(emb["state_names"]), tuple(emb["action_names"]),
                   int(emb["trained_steps"]), None if rate is None else float(rate))


def validate_against_bundle(config: PolicyConfig, bundle: BundleInfo) -> list[str]:
    """Raise ConfigError naming the parameter that disagrees with the bundle; return warnings."""
    if set(config.cameras.names) != set(bundle.cameras):
        missing = [c for c in bundle.cameras if c not in config.cameras.names]
        extra = [c for c in config.cameras.names if c not in bundle.cameras]
        raise ConfigError("cameras.names", f"the bundle's layout needs cameras {list(bundle.cameras)}; "
                                           f"missing {missing}, unknown {extra}")
    if len(config.joints.names) != len(bundle.state_names):
        raise ConfigError("joints.names", f"has {len(config.joints.names)} joints but the bundle's state "
                                          f"has {len(bundle.state_names)} dims {list(bundle.state_names)}")
    a = bundle.action_dim
    for param, n in (("safety.position_min", len(config.safety.position_min)),
                     ("safety.position_max", len(config.safety.position_max)),
                     ("safety.max_step", len(config.safety.max_step))):
        if n != a:
            raise ConfigError(param, f"has {n} values but the bundle has {a} action dims {list(bundle.action_names)}")
    # output.joint_names needs no check here: from_params ties it to the safety dim checked above.
    if config.chunk.execute_steps > bundle.trained_steps:
        raise ConfigError("chunk.execute_steps", f"{config.chunk.execute_steps} exceeds the bundle's "
                                                 f"trained_steps {bundle.trained_steps}; later steps were "
                                                 "never supervised")
    if bundle.action_rate_hz is None:
        raise ConfigError("bundle", f"{config.bundle!r} records no action_rate_hz, so the time between "
                                    "its action steps is unknown and the robot could run them at the wrong "
                                    "speed; convert it again with `lightwam convert --action-rate-hz <Hz>` "
                                    "(the rate its training data was recorded at)")
    warnings = [*_name_mismatch("joints.names", config.joints.names, bundle.state_names, "state"),
                *_name_mismatch("output.joint_names", config.output.joint_names, bundle.action_names, "action")]
    if config.control_rate_hz < bundle.action_rate_hz:
        warnings.append(f"control_rate_hz {config.control_rate_hz} is below the bundle's action rate "
                        f"{bundle.action_rate_hz} Hz: intermediate actions are skipped")
    return warnings


_PLACEHOLDER_NAME = re.compile(r"^(action|state)_\d+$")  # what convert writes when names are unknown


def _name_mismatch(param: str, configured: Sequence[str], trained: Sequence[str], part: str) -> list[str]:
    """Compare the profile's names with the bundle's, position by position (the model's dim k is
    the bundle's name k). A name present in both lists at different positions means the profile
    lists the dims in another order than the model: every dim would be mislabelled, so that is an
    error. Different names altogether (the robot names its joints otherwise than the converter
    guessed) only warn, with the mapping. Placeholder names (action_0, ...) say nothing."""
    if list(configured) == list(trained) or all(_PLACEHOLDER_NAME.match(n) for n in trained):
        return []
    where = {n: i for i, n in enumerate(trained)}
    moved = [(n, i, where[n]) for i, n in enumerate(configured) if n in where and where[n] != i]
    if moved:
        n, i, j = moved[0]
        raise ConfigError(param, f"lists '{n}' as {part} dim {i} but the bundle's model has it as dim {j} "
                                 f"(bundle {part} order: {list(trained)}); list the names in the bundle's order")
    pairs = ", ".join(f"{t}->{c}" for t, c in zip(trained, configured) if t != c)
    return [f"{param} differ from the bundle's {part} names; dims are mapped by position: {pairs}"]
