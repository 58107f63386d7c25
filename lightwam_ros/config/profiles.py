"""Robot profiles (rcl parameter YAML files) and bundle directories: finding and reading them.

API
- ``load_profile(name_or_path, node_name="lightwam_policy") -> (node_name, flat dict)`` -- read a
  ``<node>: ros__parameters:`` / ``/**:`` YAML (bare name -> config/<name>.yaml), type-checked
  against the parameter table.
- ``resolve_profile(name_or_path) -> Path``; ``profile_dirs() -> list[Path]`` (where bare names are
  looked up).
- ``resolve_bundle_path(value) -> Path`` -- the ``bundle`` parameter -> an existing directory.

This is the part of the package that depends on where it runs from (a source checkout, a pip or
colcon install, the ament index); the table and the configs stay pure data. The checkout's top-level
config/ and models/ are found from this file's location, ``_SOURCE_TREE``: moving this file means
changing that one line.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from lightwam_ros.config.parameters import NODE_NAME, SPECS, ConfigError, _coerce, _is_ros_builtin, _unknown

PACKAGE = "lightwam_ros"
# lightwam_ros/config/profiles.py -> the checkout root (in an install: site-packages, where neither
# config/ nor models/ exists and the share dir is used).
_SOURCE_TREE = Path(__file__).resolve().parents[2]


def profile_dirs() -> list[Path]:
    """Where bare profile names are looked up: the source tree's config/, the installed share dir
    (sys.prefix/share/lightwam_ros/config), and ament_index's share dir when importable."""
    dirs = [_SOURCE_TREE / "config",
            Path(sys.prefix) / "share" / PACKAGE / "config"]
    try:
        from ament_index_python.packages import get_package_share_directory
        dirs.append(Path(get_package_share_directory(PACKAGE)) / "config")
    except Exception:  # noqa: BLE001 - not installed with ament (pip/source checkout): skip it
        pass
    unique: list[Path] = []
    for d in dirs:
        if d not in unique:
            unique.append(d)
    return unique


def resolve_profile(name_or_path: str | Path) -> Path:
    """A path (has a '/' or ends in .yaml/.yml) is used as is; a bare name -> <dir>/<name>.yaml."""
    s = str(name_or_path)
    if "/" in s or s.endswith((".yaml", ".yml")):
        path = Path(s).expanduser()
        if not path.is_file():
            raise ConfigError("robot", f"profile file {path} does not exist")
        return path
    dirs = profile_dirs()
    for d in dirs:
        if (d / f"{s}.yaml").is_file():
            return d / f"{s}.yaml"
    known = sorted({p.stem for d in dirs if d.is_dir() for p in d.glob("*.yaml")})
    raise ConfigError("robot", f"no profile named {s!r} in {', '.join(map(str, dirs))}; "
                               f"known profiles: {', '.join(known) or 'none'}")


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = value


def load_profile(name_or_path: str | Path, node_name: str = NODE_NAME) -> tuple[str, dict[str, Any]]:
    """Read a profile YAML -> (node name, flat dotted parameters).

    Accepts the rcl parameter-file forms: ``<node>: ros__parameters: {...}`` (also ``/<node>`` and
    ``/ns/<node>``) and ``/**: ros__parameters:``. Wildcard entries apply first and node entries
    override them, as rcl does. If the file names exactly one node, that is the node name returned;
    with several, the one named ``node_name`` is used. Values are type-checked with rclpy's rules
    (an integer where a double is expected is an error, because the node would reject it at launch)
    and unknown names are errors naming the file.
    """
    import yaml

    path = resolve_profile(name_or_path)
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError("robot", f"{path} is not valid YAML: {e}") from e
    if not isinstance(doc, dict):
        raise ConfigError("robot", f"{path}: expected '<node>: ros__parameters:' at the top level")

    wildcard: dict[str, Any] = {}
    nodes: dict[str, dict[str, Any]] = {}

    def collect(key: str, value: Any) -> None:
        if not isinstance(value, dict):
            raise ConfigError("robot", f"{path}: entry {key!r} must map to 'ros__parameters:'")
        if "ros__parameters" in value:
            params = value["ros__parameters"] or {}
            if not isinstance(params, dict):
                raise ConfigError("robot", f"{path}: {key}.ros__parameters must be a mapping")
            flat: dict[str, Any] = {}
            _flatten("", params, flat)
            name = key.strip("/")
            if name in ("**", "*") or name.endswith("/**"):
                wildcard.update(flat)
            else:
                nodes.setdefault(name.rsplit("/", 1)[-1], {}).update(flat)
        else:  # nested namespace form: ns: node: ros__parameters
            for k, v in value.items():
                collect(f"{key}/{k}", v)

    for k, v in doc.items():
        collect(str(k), v)
    if not wildcard and not nodes:
        raise ConfigError("robot", f"{path}: no 'ros__parameters' section found")
    if len(nodes) == 1:
        node_name = next(iter(nodes))
    elif len(nodes) > 1 and node_name not in nodes:
        raise ConfigError("robot", f"{path} has parameters for {sorted(nodes)} but none for {node_name!r}")
    flat = {**wildcard, **nodes.get(node_name, {})}
    for name, value in flat.items():
        if name in SPECS:
            if value is not None:
                _coerce(SPECS[name], value, strict=True)
        elif not _is_ros_builtin(name):
            err = _unknown(name)
            raise ConfigError(name, f"{str(err).split(': ', 1)[1]} in {path}")
    return node_name, flat


def resolve_bundle_path(value: str | Path) -> Path:
    """bundle parameter -> an existing directory. Relative paths try <share>/models (installed),
    <source tree>/models, then the working directory."""
    p = Path(value).expanduser()
    candidates = [p] if p.is_absolute() else [
        *(d.parent / "models" / p for d in profile_dirs()[1:]),  # <share>/models: pip and colcon installs
        _SOURCE_TREE / "models" / p,
        Path.cwd() / p,
    ]
    for c in candidates:
        if c.is_dir():
            return c
    raise ConfigError("bundle", f"bundle directory {str(value)!r} not found (tried "
                                f"{', '.join(str(c) for c in candidates)})")
