"""Robot profile schema: the ROS parameter table as data, validated into frozen configs.

The package is split by job; each module's docstring has its own API and reasons:
- ``parameters`` -- the parameter table (PARAMETERS, SPECS, declarations()), ConfigError, the mode
  enums, NODE_NAME, the input bounds, and the check of one value against its table entry.
- ``policy`` -- the frozen, self-validating configs (CameraConfig ... PolicyConfig) and from_params().
- ``profiles`` -- profile YAMLs and bundle directories on disk (load_profile, resolve_bundle_path),
  and the bounds a profile is read within (MAX_PROFILE_*).
- ``bounded_yaml`` -- user YAML files (profiles, bag metadata) read with bounded work and memory.
- ``bundle_check`` -- the configuration against the loaded bundle's manifest (BundleInfo).
- ``updates`` -- runtime parameter changes (apply_updates).
(docs/parameters.md is rendered from the table by ros/docs_reference.py, next to the launch
arguments it also lists.)
Imports run one way: parameters <- policy <- bundle_check <- updates, and parameters, bounded_yaml
<- profiles.

This module re-exports every public name, so callers keep one import,
``from lightwam_ros import config as cfgmod`` and ``cfgmod.X``, and do not depend on which module
holds what. Names starting with ``_`` are not re-exported; code that needs one imports it from its
module.

API
- ``PARAMETERS: tuple[ParamSpec, ...]``, ``SPECS: Mapping[str, ParamSpec]`` -- the parameter table
  (docs/parameters.md, generated from it), one place; node.py declares ROS parameters from it.
- ``declarations() -> list[Declaration]`` -- per parameter: rclpy type name, default (None = declare
  by type only), description, constraint text, float/int range, in plain python.
- ``from_params(params: Mapping[str, Any]) -> PolicyConfig`` -- flat dotted names -> validated
  config; raises ``ConfigError`` whose message (and ``.parameter``) names the parameter.
- ``load_profile(name_or_path, node_name="lightwam_policy") -> (node_name, flat dict)`` -- read a
  ``<node>: ros__parameters:`` / ``/**:`` YAML (bare name -> config/<name>.yaml).
- ``BundleInfo`` + ``validate_against_bundle(config, info) -> list[str]`` (warnings; raises
  ``ConfigError`` on a mismatch).
- ``apply_updates(config, changes, bundle=None) -> UpdateResult`` -- runtime parameter changes;
  read-only parameters are refused with the reason.
- ``resolve_bundle_path(value) -> Path``.
"""

from __future__ import annotations

from lightwam_ros.config.bounded_yaml import YamlLimitError, read_bounded_yaml, shown_keys
from lightwam_ros.config.bundle_check import BundleInfo, validate_against_bundle
from lightwam_ros.config.parameters import (
    MAX_INSTRUCTION_CHARS,
    MAX_JOINT_NAMES,
    NODE_NAME,
    PARAMETERS,
    ROS_BUILTIN_PREFIXES,
    RUNTIME_PARAMETERS,
    SPECS,
    ActionSpace,
    Backend,
    ConfigError,
    Declaration,
    DType,
    MergeMode,
    OutputMode,
    ParamSpec,
    ParamType,
    TextEncoder,
    declarations,
)
from lightwam_ros.config.policy import (
    COMPRESSED_SUFFIX,
    TRANSPORTS,
    CameraConfig,
    ChunkConfig,
    InstructionConfig,
    JointConfig,
    OutputConfig,
    PolicyConfig,
    RealtimeConfig,
    SafetyConfig,
    SyncConfig,
    TextConfig,
    from_params,
    instruction_problem,
)
from lightwam_ros.config.profiles import (
    MAX_PROFILE_BYTES,
    MAX_PROFILE_DEPTH,
    MAX_PROFILE_NODES,
    MAX_PROFILE_PARAMETERS,
    PACKAGE,
    load_profile,
    profile_dirs,
    resolve_bundle_path,
    resolve_profile,
)
from lightwam_ros.config.updates import UpdateResult, apply_updates

__all__ = [
    # parameters
    "MAX_INSTRUCTION_CHARS",
    "MAX_JOINT_NAMES",
    "NODE_NAME",
    "PARAMETERS",
    "ROS_BUILTIN_PREFIXES",
    "RUNTIME_PARAMETERS",
    "SPECS",
    "ActionSpace",
    "Backend",
    "ConfigError",
    "DType",
    "Declaration",
    "MergeMode",
    "OutputMode",
    "ParamSpec",
    "ParamType",
    "TextEncoder",
    "declarations",
    # policy
    "COMPRESSED_SUFFIX",
    "TRANSPORTS",
    "CameraConfig",
    "ChunkConfig",
    "InstructionConfig",
    "JointConfig",
    "OutputConfig",
    "PolicyConfig",
    "RealtimeConfig",
    "SafetyConfig",
    "SyncConfig",
    "TextConfig",
    "from_params",
    "instruction_problem",
    # profiles
    "MAX_PROFILE_BYTES",
    "MAX_PROFILE_DEPTH",
    "MAX_PROFILE_NODES",
    "MAX_PROFILE_PARAMETERS",
    "PACKAGE",
    "load_profile",
    "profile_dirs",
    "resolve_bundle_path",
    "resolve_profile",
    # bounded_yaml
    "YamlLimitError",
    "read_bounded_yaml",
    "shown_keys",
    # bundle_check
    "BundleInfo",
    "validate_against_bundle",
    # updates
    "UpdateResult",
    "apply_updates",
]
