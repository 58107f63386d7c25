"""What `ros2 launch lightwam_ros policy.launch.py` starts, as plain testable Python.

`launch` and `launch_ros` are not installable everywhere (not from PyPI), and launch files are hard
to test. So every decision lives here -- which profile YAML a `robot:=` argument means, how the
`bundle:= backend:= device:= dtype:=` overrides apply, the namespace, remappings, the Fast DDS
profile -- and launch/policy.launch.py only turns a `NodeLaunchPlan` into a launch_ros Node.
`NodeLaunchPlan.command()` gives the equivalent plain command line, which the tests run to check
that the plan really starts a working node.

Unknown launch arguments: `plan_from_arguments` rejects names it does not know, but a launch file
sees every launch configuration of the whole launch (an including file's own arguments too), so the
launch file instead reports, as a warning, the names that look meant for it (`misplaced_arguments`).

Namespaces: rcl matches a params file's top-level key against the node's fully qualified name, so
a profile keyed `lightwam_policy:` silently stops applying once the node runs in a namespace. The
plan therefore writes a resolved params file keyed by the exact node name it launches.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lightwam_ros.config import NODE_NAME, PARAMETERS, ConfigError, load_profile, resolve_profile
from lightwam_ros.ros.dds_profile import NEW_VARIABLE, OLD_VARIABLE, profile_env

PACKAGE = "lightwam_ros"
EXECUTABLE = "policy_node"
AUTOSTART_FLAG = "--autostart"
# dds_profile:= choices -> the Fast DDS XML profile in <share>/config (docs/network.md: which one when).
DDS_PROFILES = {"shm": "fastdds_shm.xml", "udp": "fastdds_udp.xml"}


class LaunchConfigError(ValueError):
    """A launch argument that cannot be used; the message names the argument."""


@dataclass(frozen=True)
class LaunchArgument:
    """One `name:=value` launch argument with its default and the help `ros2 launch -s` shows."""

    name: str
    default: str
    description: str


# Parameter overrides: launch argument -> ROS parameter; "" means "keep the profile's value".
OVERRIDES: tuple[str, ...] = ("bundle", "backend", "device", "dtype")

LAUNCH_ARGUMENTS: tuple[LaunchArgument, ...] = (
    LaunchArgument("robot", "demo",
                   "robot profile: a name from <share>/lightwam_ros/config (aloha_3cam, libero_franka, "
                   "demo) or a path to a parameter YAML (`lightwam_policy: ros__parameters:` or `/**:`)"),
    LaunchArgument("bundle", "", "model bundle directory (overrides the profile); relative paths resolve "
                                 "against <share>/lightwam_ros/models, then the current directory"),
    LaunchArgument("backend", "", "inference backend, overrides the profile: torch | onnx"),
    LaunchArgument("device", "", "inference device, overrides the profile: auto | cpu | cuda | cuda:N"),
    LaunchArgument("dtype", "", "inference dtype, overrides the profile: float32 | bfloat16 | float16"),
    LaunchArgument("namespace", "", "namespace of the node; its relative topics move under it"),
    LaunchArgument("remap", "", "extra topic remappings, 'from:=to' separated by spaces or commas "
                                "(e.g. joint_states:=/robot/joint_states)"),
    LaunchArgument("autostart", "true", "configure and activate the lifecycle node at start (false: wait "
                                        "for lifecycle transitions from outside)"),
    LaunchArgument("dds_profile", "shm", "the package's Fast DDS profile for the node: shm (config/fastdds_shm.xml: "
                                         "large shared-memory segment, for a node on the robot's computer) | udp "
                                         "(config/fastdds_udp.xml: UDPv4 only with large socket buffers, for a node "
                                         "on another host; the robot side needs it too) | none; set as "
                                         f"{NEW_VARIABLE} on Fast DDS 3.x (Kilted) or {OLD_VARIABLE} on 2.x "
                                         "(Humble, Jazzy), unless either variable is already set"),
    LaunchArgument("log_level", "info", "node log level: debug | info | warn | error"),
)
_ARGUMENT_NAMES = {a.name for a in LAUNCH_ARGUMENTS}
_LOG_LEVELS = ("debug", "info", "warn", "error", "fatal")

# Launch configurations that launch / launch_ros / `ros2 launch` set or read themselves
# (PushRosNamespace, SetRemap, SetParameter, --launch-prefix, every process's emulate_tty and
# shutdown timeouts): never a user's mistake, and `ros_namespace` would otherwise read as a
# misspelling of `namespace`.
LAUNCH_SYSTEM_CONFIGURATIONS = frozenset({"ros_namespace", "ros_remaps", "global_params", "launch-prefix",
                                          "launch-prefix-filter", "emulate_tty", "sigterm_timeout",
                                          "sigkill_timeout"})
_SIMILARITY = 0.8  # difflib ratio: bakend/backend 0.92, bundel/bundle 0.83, robot_name/robot 0.67


def _canonical(name: str) -> str:
    return name.lower().replace("-", "").replace("_", "")


def misplaced_arguments(names: Iterable[str]) -> dict[str, str]:
    """Among launch configuration names, those that look meant for policy.launch.py but are not its
    arguments, each with a hint: {'bakend': 'did you mean backend?', 'dry_run': 'a node parameter ...'}.

    Looks meant for it: equal to an argument but for case, '-' and '_' (`log-level`, `Robot`), a close
    misspelling (difflib similarity >= 0.8: `bakend`, `bundel`, `namspace`), or the name of a node
    parameter (`dry_run`, `control_rate_hz`: those are set in the profile YAML, not as arguments).
    Other unknown names are not reported: the launch context holds every argument of the whole launch,
    an including launch file's own (`use_sim_time`, `world`, ...) included, and an included file is not
    told which of them its includer meant for it.
    """
    by_canonical = {_canonical(n): n for n in _ARGUMENT_NAMES}
    parameters = {s.name for s in PARAMETERS} - _ARGUMENT_NAMES
    found: dict[str, str] = {}
    for name in sorted(set(names)):
        if name in _ARGUMENT_NAMES or name in LAUNCH_SYSTEM_CONFIGURATIONS:
            continue
        close = by_canonical.get(_canonical(name)) or next(
            iter(difflib.get_close_matches(name.lower(), sorted(_ARGUMENT_NAMES), n=1, cutoff=_SIMILARITY)), None)
        if close:
            found[name] = f"did you mean {close}?"
        elif name in parameters:
            found[name] = "a node parameter, not a launch argument: set it in the robot profile YAML"
    return found


def misplaced_arguments_message(names: Iterable[str]) -> str | None:
    """The launch log warning for `misplaced_arguments(names)`, naming the known arguments; None if none."""
    found = misplaced_arguments(names)
    if not found:
        return None
    items = "; ".join(f"{name}:= ({hint})" for name, hint in found.items())
    return (f"lightwam_ros policy.launch.py: ignoring unknown launch argument(s) {items}. "
            f"Known arguments: {', '.join(a.name for a in LAUNCH_ARGUMENTS)} "
            "(`ros2 launch lightwam_ros policy.launch.py --show-args` describes them)")


def namespace_under(base: str | None, namespace: str) -> str:
    """The `namespace` argument under an including file's PushRosNamespace (`ros_namespace`), as
    launch_ros composes them: a relative namespace goes under the pushed one, an absolute one stays.

    The plan must know the final namespace because its params file is keyed by the fully qualified
    node name; launch_ros would otherwise prefix the namespace after the file was written.
    """
    namespace = namespace.strip()
    if not base or namespace.startswith("/"):
        return namespace
    return f"{base.rstrip('/')}/{namespace}" if namespace else base


def package_share_dir() -> Path:
    """<install>/share/lightwam_ros when installed (ament index), else this source checkout."""
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory(PACKAGE))
    except Exception:  # noqa: BLE001 - not importable, AMENT_PREFIX_PATH unset, or not installed
        return Path(__file__).resolve().parents[2]


def available_profiles(share_dir: Path) -> list[str]:
    """Names of the robot profiles shipped in <share>/config."""
    return sorted(p.stem for p in (share_dir / "config").glob("*.yaml"))


def parse_remappings(text: str) -> tuple[tuple[str, str], ...]:
    """'a:=b, c:=d' -> (('a', 'b'), ('c', 'd'))."""
    pairs = []
    for item in text.replace(",", " ").split():
        src, sep, dst = item.partition(":=")
        if not sep or not src or not dst:
            raise LaunchConfigError(f"remap: expected 'from:=to' items, got {item!r}")
        pairs.append((src, dst))
    return tuple(pairs)


def dds_profile_env(name: str, share_dir: Path, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment that loads the Fast DDS profile `name` (DDS_PROFILES, or "none") into a process.

    One place for the choice because both ends of a link decide its path: live replay loads the same
    profile into its own participant (which publishes the frames) as into the node it starts, and the
    launch file and the replay must mean the same file by the same name.
    """
    key = name.strip().lower()
    if key == "none":
        return {}
    if key not in DDS_PROFILES:
        raise LaunchConfigError(f"dds_profile: expected one of {[*DDS_PROFILES, 'none']}, got {name!r}")
    return profile_env(share_dir / "config" / DDS_PROFILES[key], environ)


def parse_bool(name: str, text: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off"):
        return False
    raise LaunchConfigError(f"{name}: expected true or false, got {text!r}")


def normalize_namespace(ns: str) -> str:
    """'' -> '/', 'robot1' -> '/robot1', '/a/b/' -> '/a/b'."""
    ns = "/" + ns.strip().strip("/")
    return ns


def nest_parameters(flat: Mapping[str, Any]) -> dict[str, Any]:
    """{'cameras.names': [...]} -> {'cameras': {'names': [...]}} (the profile YAML form)."""
    nested: dict[str, Any] = {}
    for name in sorted(flat):
        node = nested
        *parents, leaf = name.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = flat[name]
    return nested


@dataclass(frozen=True)
class NodeLaunchPlan:
    """Everything needed to start the policy node, independent of the launch system."""

    profile: Path  # the profile YAML the parameters came from
    parameters: dict[str, Any]  # flat, dotted names: profile values with overrides applied
    namespace: str = "/"
    name: str = NODE_NAME
    remappings: tuple[tuple[str, str], ...] = ()
    autostart: bool = True
    log_level: str = "info"
    additional_env: dict[str, str] = field(default_factory=dict)
    package: str = PACKAGE
    executable: str = EXECUTABLE

    @property
    def fully_qualified_name(self) -> str:
        return f"{self.namespace.rstrip('/')}/{self.name}"

    @property
    def node_arguments(self) -> list[str]:
        """Non-ROS arguments of the node executable."""
        return [AUTOSTART_FLAG] if self.autostart else []

    def write_params_file(self, directory: str | Path) -> Path:
        """Write the resolved parameters keyed by this node's fully qualified name; return the path.

        The caller owns `directory` and removes it (the launch file does so at launch shutdown).
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{self.name}.params.yaml"
        doc = {self.fully_qualified_name: {"ros__parameters": nest_parameters(self.parameters)}}
        header = f"# Resolved from {self.profile} by lightwam_ros.ros.launch_config (do not edit)\n"
        path.write_text(header + yaml.safe_dump(doc, sort_keys=False, default_flow_style=None))
        return path

    def ros_arguments(self, params_file: str | Path) -> list[str]:
        """The `--ros-args ...` part of the equivalent command line."""
        args = ["--ros-args", "-r", f"__node:={self.name}", "--params-file", str(params_file)]
        if self.namespace != "/":
            args += ["-r", f"__ns:={self.namespace}"]
        for src, dst in self.remappings:
            args += ["-r", f"{src}:={dst}"]
        args += ["--log-level", self.log_level]
        return args

    def command(self, executable: str, params_file: str | Path) -> list[str]:
        """argv that starts the node exactly as the launch file does (for tests and shells)."""
        return [executable, *self.node_arguments, *self.ros_arguments(params_file)]

    def environment(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ if base is None else base)
        env.update(self.additional_env)
        return env


def plan_from_arguments(arguments: Mapping[str, str], share_dir: Path | None = None,
                        environ: Mapping[str, str] | None = None) -> NodeLaunchPlan:
    """Launch arguments (strings, as `name:=value` gives them) -> NodeLaunchPlan.

    Unknown argument names are rejected so a typo (`bundel:=`) is not silently ignored. `environ`
    (default os.environ) is the node's environment before the plan's additions: it decides which
    Fast DDS profile variable to set, and whether the user already set one.
    """
    unknown = sorted(set(arguments) - _ARGUMENT_NAMES)
    if unknown:
        raise LaunchConfigError(f"unknown launch argument(s) {unknown}; known: {sorted(_ARGUMENT_NAMES)}")
    values = {a.name: str(arguments.get(a.name, a.default)) for a in LAUNCH_ARGUMENTS}
    share_dir = package_share_dir() if share_dir is None else share_dir
    try:
        profile = resolve_profile(values["robot"])
        _, parameters = load_profile(profile)
    except ConfigError as e:  # names the profile file / parameter already
        raise LaunchConfigError(f"robot:={values['robot']}: {e}") from e
    for name in OVERRIDES:
        if values[name]:
            parameters[name] = values[name]
    log_level = values["log_level"].strip().lower()
    if log_level not in _LOG_LEVELS:
        raise LaunchConfigError(f"log_level: expected one of {_LOG_LEVELS}, got {values['log_level']!r}")
    env = dds_profile_env(values["dds_profile"], share_dir, environ)
    return NodeLaunchPlan(
        profile=profile,
        parameters=parameters,
        namespace=normalize_namespace(values["namespace"]),
        remappings=parse_remappings(values["remap"]),
        autostart=parse_bool("autostart", values["autostart"]),
        log_level=log_level,
        additional_env=env,
    )


def describe(plan: NodeLaunchPlan) -> str:
    """One line for the launch log: what is being started with which key settings."""
    keys = {k: plan.parameters.get(k) for k in ("bundle", "backend", "device", "dtype", "output.mode", "dry_run")}
    return (f"lightwam_ros: starting {plan.fully_qualified_name} from {plan.profile} "
            f"{json.dumps(keys)} autostart={plan.autostart}")
