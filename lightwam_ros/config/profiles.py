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

Why the bounds (MAX_PROFILE_*): a profile is user input read by every command and by the launch
file, and YAML can describe far more than it spells out -- an alias to a mapping repeats it, so a
few lines of nested aliases expand to billions of parameters when flattened, and an alias to its
own mapping never ends. The file is therefore read by config.bounded_yaml (UTF-8 of bounded size,
depth and expanded node count checked on the event stream before anything is built), and the
flattened parameters are counted. A real profile is a few
kilobytes, under ten levels deep and a few hundred nodes; each bound is far above that. Every
refusal is one ConfigError (parameter ``robot``) on one line naming the file and, where there is
one, the key.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from lightwam_ros.config.bounded_yaml import YamlLimitError, read_bounded_yaml, shown_keys
from lightwam_ros.config.parameters import NODE_NAME, SPECS, ConfigError, _coerce, _is_ros_builtin, _unknown

PACKAGE = "lightwam_ros"
MAX_PROFILE_BYTES = 1 << 20  # the shipped profiles are 3-5 kB
MAX_PROFILE_DEPTH = 32  # nesting of mappings and lists; <node>: ros__parameters: group: name: [..] is 5
MAX_PROFILE_NODES = 20_000  # YAML nodes once every alias is expanded; the shipped profiles have ~200
MAX_PROFILE_PARAMETERS = 1000  # flattened names; the parameter table has ~50, qos_overrides a few per topic
SHOWN_VALUE_CHARS = 200  # of a refused value's message (it quotes the value, which may be long)
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


def _flatten(prefix: str, value: Any, out: dict[str, Any], path: Path) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out, path)
    else:
        if len(out) >= MAX_PROFILE_PARAMETERS and prefix not in out:
            raise ConfigError("robot", f"{path} has more than {MAX_PROFILE_PARAMETERS} parameters "
                                       f"(at {shown_keys(prefix.split('.'))})")
        out[prefix] = value


def _read_yaml(path: Path) -> Any:
    """The profile file as a YAML document, within the bounds of the module docstring."""
    try:
        return read_bounded_yaml(path, max_bytes=MAX_PROFILE_BYTES, max_depth=MAX_PROFILE_DEPTH,
                                 max_nodes=MAX_PROFILE_NODES, what="a profile is a few kB")
    except YamlLimitError as e:
        raise ConfigError("robot", str(e)) from None


def load_profile(name_or_path: str | Path, node_name: str = NODE_NAME) -> tuple[str, dict[str, Any]]:
    """Read a profile YAML -> (node name, flat dotted parameters).

    Accepts the rcl parameter-file forms: ``<node>: ros__parameters: {...}`` (also ``/<node>`` and
    ``/ns/<node>``) and ``/**: ros__parameters:``. Wildcard entries apply first and node entries
    override them, as rcl does. If the file names exactly one node, that is the node name returned;
    with several, the one named ``node_name`` is used. Values are type-checked with rclpy's rules
    (an integer where a double is expected is an error, because the node would reject it at launch)
    and unknown names are errors naming the file.
    """
    path = resolve_profile(name_or_path)
    doc = _read_yaml(path)
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
            _flatten("", params, flat, path)
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
                try:
                    _coerce(SPECS[name], value, strict=True)
                except ConfigError as err:  # it names the parameter; the user also needs the file
                    why = str(err).split(": ", 1)[1]
                    why = why if len(why) <= SHOWN_VALUE_CHARS else why[:SHOWN_VALUE_CHARS - 3] + "..."
                    raise ConfigError(name, f"{why} in {path}") from None
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
