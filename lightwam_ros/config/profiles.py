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
own mapping never ends. The file is therefore read as UTF-8 of bounded size, its event stream is
checked for depth and for the number of nodes it expands to (aliases counted at their full size)
before any of it is built, and the flattened parameters are counted. A real profile is a few
kilobytes, under ten levels deep and a few hundred nodes; each bound is far above that. Every
refusal is one ConfigError (parameter ``robot``) on one line naming the file and, where there is
one, the key.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any

from lightwam_ros.config.parameters import NODE_NAME, SPECS, ConfigError, _coerce, _is_ros_builtin, _unknown

PACKAGE = "lightwam_ros"
MAX_PROFILE_BYTES = 1 << 20  # the shipped profiles are 3-5 kB
MAX_PROFILE_DEPTH = 32  # nesting of mappings and lists; <node>: ros__parameters: group: name: [..] is 5
MAX_PROFILE_NODES = 20_000  # YAML nodes once every alias is expanded; the shipped profiles have ~200
MAX_PROFILE_PARAMETERS = 1000  # flattened names; the parameter table has ~50, qos_overrides a few per topic
SHOWN_KEYS = 8  # levels of a key path quoted in an error
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
                                       f"(at {_shown(prefix.split('.'))})")
        out[prefix] = value


def _shown(keys: list[str]) -> str:
    """A key path for an error message: its first SHOWN_KEYS levels, each cut to 40 characters."""
    parts = [k if len(k) <= 40 else k[:37] + "..." for k in keys[:SHOWN_KEYS]]
    return ".".join(parts) + (f"... ({len(keys)} levels)" if len(keys) > SHOWN_KEYS else "")


def _yaml_problem(exc: Exception) -> str:
    """A YAML error on one line: 'line L, column C: problem' (PyYAML's own text spans lines)."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or getattr(exc, "context", None) or str(exc)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return " ".join(f"{where}{problem}".split())


class _Walk:
    """The event stream of a YAML text with the key path at each event (for checks and errors)."""

    def __init__(self, text: str, loader: Any) -> None:
        self.text, self.loader = text, loader
        # per open collection: [anchor, expanded count at its start, is mapping, next is a key, key]
        self.stack: list[list[Any]] = []

    def keys(self) -> list[str]:
        return [str(f[4]) if f[2] else "[]" for f in self.stack]

    def __iter__(self) -> Any:
        import yaml

        stack = self.stack
        for event in yaml.parse(self.text, Loader=self.loader):
            if isinstance(event, yaml.NodeEvent) and stack and stack[-1][2]:  # a mapping alternates key, value
                frame = stack[-1]
                if frame[3]:
                    frame[4] = event.value if isinstance(event, yaml.ScalarEvent) else "?"
                frame[3] = not frame[3]
            if isinstance(event, yaml.CollectionStartEvent):
                stack.append([event.anchor, 0, isinstance(event, yaml.MappingStartEvent), True, "?"])
            yield event
            if isinstance(event, yaml.CollectionEndEvent):
                stack.pop()

    def key_at(self, line: int, column: int) -> str | None:
        """The key path of the node that starts at (line, column), 0-based; None if none does."""
        for event in self:
            mark = event.start_mark
            if mark is not None and (mark.line, mark.column) == (line, column):
                return _shown(self.keys()) or None
        return None


def _check_events(text: str, path: Path, loader: Any) -> None:
    """Refuse what would make building the document unbounded, from its event stream alone:
    nesting beyond MAX_PROFILE_DEPTH, an alias inside the node it names (a cycle), an undefined
    alias, and more than MAX_PROFILE_NODES nodes once the aliases are expanded.

    Why events: the parser keeps its own stack (no recursion), so a 100000-level file is refused at
    level MAX_PROFILE_DEPTH + 1 without reading further, and an alias's expansion is known from the
    size of the node its anchor closed over, without building anything.
    """
    import yaml

    walk = _Walk(text, loader)
    # anchor -> expanded nodes of the node it names, None while that node is open (the latest
    # definition of a reused name counts, as for the composer)
    sizes: dict[str, int | None] = {}
    expanded = 0

    def count(n: int, what: str) -> None:
        nonlocal expanded
        expanded += n
        if expanded > MAX_PROFILE_NODES:
            raise ConfigError("robot", f"{path} expands to more than {MAX_PROFILE_NODES} YAML nodes ({what} "
                                       f"at {_shown(walk.keys()) or 'the top level'})")

    for event in walk:
        if isinstance(event, yaml.AliasEvent):
            anchor = event.anchor
            if anchor in sizes and sizes[anchor] is None:
                raise ConfigError("robot", f"{path}: alias *{anchor} at {_shown(walk.keys())} is inside the "
                                           f"node &{anchor} it refers to (an endless structure)")
            if anchor not in sizes:
                raise ConfigError("robot", f"{path}: alias *{anchor} at {_shown(walk.keys())} refers to no "
                                           "anchor defined before it")
            count(sizes[anchor] or 0, f"alias *{anchor}")
        elif isinstance(event, yaml.ScalarEvent):
            count(1, "a value")
            if event.anchor is not None:
                sizes[event.anchor] = 1
        elif isinstance(event, yaml.CollectionStartEvent):
            count(1, "a collection")
            walk.stack[-1][1] = expanded - 1
            if event.anchor is not None:
                sizes[event.anchor] = None
            if len(walk.stack) > MAX_PROFILE_DEPTH:
                raise ConfigError("robot", f"{path}: key {_shown(walk.keys())} nests deeper than "
                                           f"{MAX_PROFILE_DEPTH} levels")
        elif isinstance(event, yaml.CollectionEndEvent):
            anchor, start = walk.stack[-1][:2]
            if anchor is not None:
                sizes[anchor] = expanded - start


@functools.lru_cache(maxsize=1)
def _loader() -> Any:
    """The safe loader (libyaml's parser where PyYAML has it: same types, far faster) whose value
    conversions fail as YAML errors at the value's position: an impossible date or a 5000-digit
    integer is a ValueError deep in PyYAML, which would otherwise name neither the line nor the key."""
    import yaml

    base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    class ProfileLoader(base):  # type: ignore[misc, valid-type]
        def construct_object(self, node: Any, deep: bool = False) -> Any:
            try:
                return super().construct_object(node, deep)
            except (ValueError, TypeError, OverflowError) as e:
                shown = node.value if isinstance(node.value, str) else node.tag
                shown = shown if len(shown) <= 40 else shown[:37] + "..."
                why = " ".join(str(e).split())
                why = why if len(why) <= 100 else why[:97] + "..."
                raise yaml.constructor.ConstructorError(
                    None, None, f"{shown!r} does not convert ({why})", node.start_mark) from None

    return ProfileLoader


def _read_yaml(path: Path) -> Any:
    """The profile file as a YAML document, within the bounds of the module docstring."""
    import yaml

    try:
        with path.open("rb") as f:
            data = f.read(MAX_PROFILE_BYTES + 1)
    except OSError as e:
        raise ConfigError("robot", f"{path} cannot be read: {e.strerror or e}") from None
    if len(data) > MAX_PROFILE_BYTES:
        raise ConfigError("robot", f"{path} is larger than {MAX_PROFILE_BYTES} bytes; a profile is a few kB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise ConfigError("robot", f"{path} is not UTF-8 text (line {line}: byte 0x{data[e.start]:02x})") from None
    loader = _loader()
    try:
        _check_events(text, path, loader)
        return yaml.load(text, Loader=loader)  # a safe loader (see _loader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        key = None
        if isinstance(e, yaml.constructor.ConstructorError) and mark is not None:
            key = _Walk(text, loader).key_at(mark.line, mark.column)  # the text parsed: this walk ends
        raise ConfigError("robot", f"{path} is not valid YAML: {_yaml_problem(e)}"
                                   + (f" (key {key})" if key else "")) from None


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
