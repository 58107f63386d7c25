"""Launch logic (lightwam_ros.ros.launch_config): profile choice, overrides, namespace, remappings.

The launch system itself (launch, launch_ros) is not installable from PyPI, so the decisions are
tested here as plain Python, and the resolved parameter file is checked against real rcl parsing
(rclpy.init with --params-file, a node in the launched namespace). The node actually started from
a plan's command line is tested in test_node_lifecycle.py.

Where launch and launch_ros import (a ROS 2 installation, or their sources on PYTHONPATH), the last
tests run the colcon-installed launch file the way `ros2 launch` does (LaunchService +
IncludeLaunchDescription): the node reaches `active`, a mistyped argument is reported, an including
launch file's own arguments and PushRosNamespace work, and no temporary file is left behind.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from lightwam_ros import config
from lightwam_ros.ros.dds_profile import NEW_VARIABLE, OLD_VARIABLE, profile_env
from lightwam_ros.ros.launch_config import (
    AUTOSTART_FLAG,
    LAUNCH_ARGUMENTS,
    LaunchConfigError,
    misplaced_arguments,
    misplaced_arguments_message,
    namespace_under,
    nest_parameters,
    parse_remappings,
    plan_from_arguments,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
LAUNCH_FILE = REPO_ROOT / "launch" / "policy.launch.py"
needs_launch_ros = pytest.mark.skipif(
    importlib.util.find_spec("launch_ros") is None or importlib.util.find_spec("launch") is None,
    reason="launch/launch_ros are not installable from PyPI; the launch file is exercised only where ROS 2 "
           "is installed or their sources are on PYTHONPATH (its logic is tested above)")


def test_every_launch_argument_has_a_description() -> None:
    names = [a.name for a in LAUNCH_ARGUMENTS]
    assert len(names) == len(set(names))
    assert {"robot", "bundle", "backend", "device", "dtype", "namespace", "remap", "autostart"} <= set(names)
    for a in LAUNCH_ARGUMENTS:
        assert len(a.description) > 20, a.name


@pytest.mark.parametrize("robot,mode,n_cams", [("aloha_3cam", "joint_trajectory", 3),
                                                ("libero_franka", "forward", 2),
                                                ("demo", "joint_trajectory", 3)])
def test_shipped_profiles_resolve_and_validate(robot: str, mode: str, n_cams: int) -> None:
    plan = plan_from_arguments({"robot": robot}, share_dir=REPO_ROOT)
    assert plan.profile == REPO_ROOT / "config" / f"{robot}.yaml"
    assert plan.parameters["output.mode"] == mode
    assert len(plan.parameters["cameras.names"]) == n_cams
    cfg = config.from_params(plan.parameters)  # the whole table validates (bundle aside)
    assert cfg.safety.dim == len(cfg.output.joint_names)
    assert plan.namespace == "/" and plan.fully_qualified_name == "/lightwam_policy"
    assert plan.node_arguments == [AUTOSTART_FLAG]


def test_dds_profile_is_set_unless_the_user_chose_one(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The profile goes under the variable the node's Fast DDS reads (lightwam_ros.ros.dds_profile): a 2.x
    library (Humble, Jazzy) silently ignores FASTDDS_DEFAULT_PROFILES_FILE."""
    shm = str(REPO_ROOT / "config" / "fastdds_shm.xml")
    monkeypatch.delenv(NEW_VARIABLE, raising=False)
    monkeypatch.delenv(OLD_VARIABLE, raising=False)
    plan = plan_from_arguments({"robot": "demo"}, share_dir=REPO_ROOT)  # os.environ by default
    assert plan.additional_env == profile_env(shm) and list(plan.additional_env.values()) == [shm]
    (variable,) = plan.additional_env
    assert plan.environment({})[variable] == shm
    fastdds2 = tmp_path / "lib"  # a Fast DDS 2.x library first on the library path, as on Jazzy
    fastdds2.mkdir()
    (fastdds2 / "libfastrtps.so.2.14").touch()
    jazzy = {"LD_LIBRARY_PATH": str(fastdds2)}
    assert plan_from_arguments({"robot": "demo"}, share_dir=REPO_ROOT, environ=jazzy).additional_env == {
        OLD_VARIABLE: shm}
    assert plan_from_arguments({"robot": "demo", "dds_profile": "none"}, share_dir=REPO_ROOT).additional_env == {}
    udp = str(REPO_ROOT / "config" / "fastdds_udp.xml")
    assert plan_from_arguments({"robot": "demo", "dds_profile": "udp"}, share_dir=REPO_ROOT,
                               environ=jazzy).additional_env == {OLD_VARIABLE: udp}
    with pytest.raises(LaunchConfigError, match="dds_profile.*shm.*udp.*none.*'tcp'"):
        plan_from_arguments({"robot": "demo", "dds_profile": "tcp"}, share_dir=REPO_ROOT)
    assert misplaced_arguments(["shm_profile"]) == {"shm_profile": "did you mean dds_profile?"}
    for users in (NEW_VARIABLE, OLD_VARIABLE):  # either name set by the user: their profile wins
        assert plan_from_arguments({"robot": "demo"}, share_dir=REPO_ROOT,
                                   environ={**jazzy, users: "/etc/my_profile.xml"}).additional_env == {}
    monkeypatch.setenv(NEW_VARIABLE, "/etc/my_profile.xml")
    assert plan_from_arguments({"robot": "demo"}, share_dir=REPO_ROOT).additional_env == {}
    profile_help = next(a.description for a in LAUNCH_ARGUMENTS if a.name == "dds_profile")
    assert NEW_VARIABLE in profile_help and OLD_VARIABLE in profile_help
    assert "fastdds_shm.xml" in profile_help and "fastdds_udp.xml" in profile_help


def test_overrides_replace_only_what_is_given(tmp_path: Path) -> None:
    base = plan_from_arguments({"robot": "aloha_3cam"}, share_dir=REPO_ROOT)
    plan = plan_from_arguments({"robot": "aloha_3cam", "bundle": "/data/b1", "backend": "torch",
                                "device": "cuda:1", "dtype": ""}, share_dir=REPO_ROOT)
    assert plan.parameters["bundle"] == "/data/b1"
    assert plan.parameters["backend"] == "torch"
    assert plan.parameters["device"] == "cuda:1"
    assert plan.parameters["dtype"] == base.parameters["dtype"] == "bfloat16"  # "" keeps the profile
    changed = {k for k in plan.parameters if plan.parameters[k] != base.parameters[k]}
    assert changed == {"bundle", "backend", "device"}


def test_yaml_path_profile_and_errors_name_the_argument(tmp_path: Path) -> None:
    own = tmp_path / "my_robot.yaml"
    own.write_text((REPO_ROOT / "config" / "demo.yaml").read_text().replace("control_rate_hz: 50.0",
                                                                              "control_rate_hz: 30.0"))
    plan = plan_from_arguments({"robot": str(own)}, share_dir=REPO_ROOT)
    assert plan.profile == own and plan.parameters["control_rate_hz"] == 30.0
    with pytest.raises(LaunchConfigError, match="robot.*aloha_3cam.*demo.*libero_franka"):
        plan_from_arguments({"robot": "no_such_robot"}, share_dir=REPO_ROOT)
    with pytest.raises(LaunchConfigError, match="robot.*does not exist"):
        plan_from_arguments({"robot": str(tmp_path / "missing.yaml")}, share_dir=REPO_ROOT)
    with pytest.raises(LaunchConfigError, match="bundel"):
        plan_from_arguments({"robot": "demo", "bundel": "x"}, share_dir=REPO_ROOT)
    with pytest.raises(LaunchConfigError, match="autostart"):
        plan_from_arguments({"robot": "demo", "autostart": "maybe"}, share_dir=REPO_ROOT)
    with pytest.raises(LaunchConfigError, match="log_level"):
        plan_from_arguments({"robot": "demo", "log_level": "loud"}, share_dir=REPO_ROOT)


def test_bad_profile_value_fails_at_launch_naming_the_parameter(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text((REPO_ROOT / "config" / "demo.yaml").read_text().replace("control_rate_hz: 50.0",
                                                                              "control_rate_hz: 50"))
    with pytest.raises(LaunchConfigError, match="control_rate_hz.*integer"):
        plan_from_arguments({"robot": str(bad)}, share_dir=REPO_ROOT)


def test_remappings_and_namespace() -> None:
    assert parse_remappings("") == ()
    assert parse_remappings("joint_states:=/robot/joint_states, a:=b") == (
        ("joint_states", "/robot/joint_states"), ("a", "b"))
    with pytest.raises(LaunchConfigError, match="remap"):
        parse_remappings("joint_states=/x")
    plan = plan_from_arguments({"robot": "demo", "namespace": "/arm1/", "remap": "x:=y",
                                "autostart": "false", "log_level": "DEBUG"}, share_dir=REPO_ROOT)
    assert plan.namespace == "/arm1" and plan.fully_qualified_name == "/arm1/lightwam_policy"
    assert plan.node_arguments == []
    args = plan.ros_arguments("/p.yaml")
    assert args[0] == "--ros-args"
    assert "__ns:=/arm1" in args and "x:=y" in args and "__node:=lightwam_policy" in args
    assert args[args.index("--params-file") + 1] == "/p.yaml"
    assert args[args.index("--log-level") + 1] == "debug"


def test_misplaced_arguments_are_those_that_look_meant_for_the_launch_file() -> None:
    """The launch context holds every argument of the whole launch (an including file's too), so only
    names that look meant for policy.launch.py are reported: near-misses of its arguments and node
    parameters given as arguments; an includer's own arguments and launch_ros' entries are not."""
    found = misplaced_arguments(["bakend", "bundel", "namspace", "log-level", "Robot", "dry_run",
                                 "use_sim_time", "world", "robot_name", "ros_namespace", "global_params",
                                 "ros_remaps", "launch-prefix", "sigterm_timeout", "robot", "backend"])
    assert found == {"bakend": "did you mean backend?", "bundel": "did you mean bundle?",
                     "namspace": "did you mean namespace?", "log-level": "did you mean log_level?",
                     "Robot": "did you mean robot?",
                     "dry_run": "a node parameter, not a launch argument: set it in the robot profile YAML"}
    message = misplaced_arguments_message({"bakend": "onnx", "use_sim_time": "true"})  # a launch_configurations
    assert "bakend:= (did you mean backend?)" in message and "use_sim_time" not in message
    assert "Known arguments: " + ", ".join(a.name for a in LAUNCH_ARGUMENTS) in message
    assert misplaced_arguments_message(["use_sim_time", "world", "robot"]) is None


def test_namespace_under_a_pushed_namespace() -> None:
    """As launch_ros composes PushRosNamespace with a node's namespace; the plan must know the result
    because its params file is keyed by the fully qualified node name."""
    assert namespace_under(None, "") == "" and namespace_under(None, "cell2") == "cell2"
    assert namespace_under("/robots", "") == "/robots"
    assert namespace_under("/robots", "cell2") == "/robots/cell2"
    assert namespace_under("/robots/", " cell2 ") == "/robots/cell2"
    assert namespace_under("/robots", "/cell2") == "/cell2"  # absolute: not prefixed
    plan = plan_from_arguments({"robot": "demo", "namespace": namespace_under("/robots", "cell2")},
                               share_dir=REPO_ROOT)
    assert plan.fully_qualified_name == "/robots/cell2/lightwam_policy"


def test_nest_parameters_round_trip() -> None:
    flat = {"a": 1.0, "b.c": ["x"], "b.d.e": True}
    assert nest_parameters(flat) == {"a": 1.0, "b": {"c": ["x"], "d": {"e": True}}}


def test_resolved_params_file_applies_to_the_namespaced_node(tmp_path: Path) -> None:
    """rcl matches params-file keys against the node's full name: a profile keyed `lightwam_policy:`
    would silently not apply under a namespace; the plan's resolved file must."""
    import rclpy
    from rclpy.node import Node

    plan = plan_from_arguments({"robot": "demo", "namespace": "cell3", "bundle": "/data/x y"},
                               share_dir=REPO_ROOT)
    params_file = plan.write_params_file(tmp_path)
    doc = yaml.safe_load(params_file.read_text())
    assert list(doc) == ["/cell3/lightwam_policy"]
    ctx = rclpy.Context()
    rclpy.init(args=["node", *plan.ros_arguments(params_file)], context=ctx)
    try:
        node = Node("placeholder", context=ctx, automatically_declare_parameters_from_overrides=True)
        try:
            assert node.get_fully_qualified_name() == "/cell3/lightwam_policy"
            got = {p: node.get_parameter(p).value for p in plan.parameters}
            for name, value in plan.parameters.items():
                assert got[name] == value or list(got[name]) == value, name
        finally:
            node.destroy_node()
    finally:
        rclpy.try_shutdown(context=ctx)
    # the same file read back with the profile loader gives the same parameters
    _, flat = config.load_profile(params_file)
    assert flat == plan.parameters


def test_launch_file_compiles() -> None:
    compile(LAUNCH_FILE.read_text(), str(LAUNCH_FILE), "exec")  # syntax only: launch_ros is absent here


@needs_launch_ros
def test_launch_file_declares_every_argument() -> None:  # pragma: no cover - needs a ROS install
    spec = importlib.util.spec_from_file_location("policy_launch", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ld = module.generate_launch_description()
    declared = {a.name for a in ld.get_launch_arguments()}
    assert declared == {a.name for a in LAUNCH_ARGUMENTS}


# -- the launch file under the real launch system (skipped where launch_ros does not import) ------------

# What `ros2 launch <file> name:=value ...` does: the file included by IncludeLaunchDescription with
# the command-line arguments, run by a LaunchService (here in a subprocess, as the real command).
_ROS2_LAUNCH = """
import sys
from launch import LaunchDescription, LaunchService
from launch.actions import IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
launch_file, *pairs = sys.argv[1:]
service = LaunchService(argv=pairs)
service.include_launch_description(LaunchDescription([IncludeLaunchDescription(
    PythonLaunchDescriptionSource(launch_file), launch_arguments=[tuple(p.split(':=', 1)) for p in pairs])]))
sys.exit(service.run())
"""

# A robot's bringup file: its own arguments, a pushed namespace, and policy.launch.py included.
_PARENT_LAUNCH = """
import os
from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, GroupAction, IncludeLaunchDescription, LogInfo
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import PushRosNamespace

def generate_launch_description():
    policy = os.path.join(get_package_share_directory("lightwam_ros"), "launch", "policy.launch.py")
    return LaunchDescription([
        DeclareLaunchArgument("use_sim_time", default_value="false"),
        DeclareLaunchArgument("world", default_value="empty"),
        DeclareLaunchArgument("policy_bundle"),
        LogInfo(msg=["bringup: world=", LaunchConfiguration("world"), " use_sim_time=",
                     LaunchConfiguration("use_sim_time")]),
        GroupAction([
            PushRosNamespace("robots"),
            IncludeLaunchDescription(PythonLaunchDescriptionSource(policy), launch_arguments={
                "robot": "demo", "bundle": LaunchConfiguration("policy_bundle"), "namespace": "cell2"}.items()),
        ]),
    ])
"""


@pytest.fixture(scope="module")
def installed_prefix(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package built and installed with colcon, as on a robot (share/, lib/, ament index)."""
    colcon = Path(sys.executable).parent / "colcon"
    if not colcon.exists():
        pytest.skip("colcon is not installed in this environment (`make venv` installs it from PyPI)")
    ws = tmp_path_factory.mktemp("launch_ws")
    src = ws / "src" / "lightwam_ros"
    src.mkdir(parents=True)
    for name in ("package.xml", "setup.py", "setup.cfg"):
        shutil.copy2(REPO_ROOT / name, src / name)
    for name in ("resource", "launch", "config", "lightwam_ros"):
        shutil.copytree(REPO_ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    (src / "models").mkdir()
    shutil.copy2(REPO_ROOT / "models" / "README.md", src / "models" / "README.md")
    env = dict(os.environ, COLCON_HOME=str(ws / ".colcon"), PYTHONDONTWRITEBYTECODE="1")
    env.pop("AMENT_PREFIX_PATH", None)
    env.pop("COLCON_PREFIX_PATH", None)
    proc = subprocess.run([str(colcon), "--log-base", str(ws / "log"), "build", "--base-paths", str(ws / "src"),
                           "--build-base", str(ws / "build"), "--install-base", str(ws / "install"),
                           "--event-handlers", "console_direct-"],
                          cwd=ws, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"colcon build failed:\n{proc.stdout}\n{proc.stderr}"
    return ws / "install" / "lightwam_ros"


def _lifecycle_state(node_name: str, timeout: float) -> str:
    """Poll <node>/get_state from another process's point of view until `active` or the timeout."""
    import rclpy
    from lifecycle_msgs.srv import GetState
    from rclpy.executors import SingleThreadedExecutor

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    label = "no answer"
    try:
        node = rclpy.create_node("launch_probe", context=ctx)
        executor = SingleThreadedExecutor(context=ctx)
        executor.add_node(node)
        client = node.create_client(GetState, f"{node_name}/get_state")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and label != "active":
            if client.wait_for_service(timeout_sec=1.0):
                future = client.call_async(GetState.Request())
                executor.spin_until_future_complete(future, timeout_sec=5.0)
                if future.result() is not None:
                    label = future.result().current_state.label
            time.sleep(0.5)
        executor.shutdown()
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=ctx)
    return label


def _ros2_launch(prefix: Path, workdir: Path, launch_file: Path, *arguments: str,
                 node_name: str | None) -> tuple[str, str, int, list[str]]:
    """Run `ros2 launch <launch_file> arguments...` against the installed package; if node_name is
    given, wait for that node to be active, then stop the launch with Ctrl-C: SIGINT to its whole
    process group, as a terminal sends it (launch itself then signals the node only if it outlives
    sigterm_timeout, and with SIGTERM).

    The launch runs in its own session (process group), and whatever happens -- a timeout, a
    failed assertion -- the group is killed at the end, so a stuck launch never leaves a node behind.

    Returns (node state, launch output, exit code, what the launch left in its private temp dir).
    """
    site = next(prefix.glob("lib/python3*/site-packages"))
    tmp = workdir / "tmp"
    tmp.mkdir(parents=True)
    env = dict(os.environ, AMENT_PREFIX_PATH=str(prefix), TMPDIR=str(tmp), PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join([str(site), *filter(None, [os.environ.get("PYTHONPATH")])]))
    log_path = workdir / "launch.log"
    state = "not waited for"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-c", _ROS2_LAUNCH, str(launch_file), *arguments],
                                cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            if node_name is not None:
                state = _lifecycle_state(node_name, timeout=180)
                os.killpg(proc.pid, signal.SIGINT)
            rc = proc.wait(timeout=90)
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # the node too, if the launch left it (or hangs)
            except ProcessLookupError:  # the group is gone: launch and node ended
                pass
            proc.wait()
    return state, log_path.read_text(), rc, sorted(p.name for p in tmp.iterdir())


@needs_launch_ros
def test_real_launch_demo_active_and_a_mistyped_argument_warns(installed_prefix: Path, tiny_bundle: Path,
                                                               tmp_path: Path) -> None:  # pragma: no cover
    state, output, rc, left = _ros2_launch(
        installed_prefix, tmp_path, installed_prefix / "share" / "lightwam_ros" / "launch" / "policy.launch.py",
        "robot:=demo", f"bundle:={tiny_bundle}", "bakend:=onnx", "sigterm_timeout:=5", node_name="/lightwam_policy")
    assert state == "active", output
    assert "bakend:= (did you mean backend?)" in output, output
    assert "Known arguments: robot, bundle, backend, device, dtype, namespace" in output, output
    assert '"backend": "torch"' in output, output  # the typo changed nothing
    assert "sigterm_timeout" not in output.split("Known arguments")[0], output  # launch's own: not reported
    assert "Traceback" not in output and rc == 0, output
    assert left == [], f"the launch left {left} in its temp dir"


@needs_launch_ros
def test_real_launch_included_with_parent_arguments_and_pushed_namespace(
        installed_prefix: Path, tiny_bundle: Path, tmp_path: Path) -> None:  # pragma: no cover
    """The includer's own arguments (given on its command line, and defaults) neither fail nor warn,
    and the profile applies under its PushRosNamespace (else the bundle override would be lost: the
    node would run the profile's own `demo_tiny_trained` instead of the bundle given here)."""
    parent = tmp_path / "bringup.launch.py"
    parent.write_text(_PARENT_LAUNCH)
    state, output, rc, left = _ros2_launch(installed_prefix, tmp_path, parent, "world:=kitchen",
                                           f"policy_bundle:={tiny_bundle}",
                                           node_name="/robots/cell2/lightwam_policy")
    assert state == "active", output
    assert "bringup: world=kitchen use_sim_time=false" in output, output
    assert "starting /robots/cell2/lightwam_policy" in output, output
    assert f"bundle {tiny_bundle} on" in output, output  # the includer's bundle, not the profile's
    assert "unknown launch argument" not in output and "[lightwam_ros.launch]" not in output, output
    assert "Traceback" not in output and rc == 0, output
    assert left == [], f"the launch left {left} in its temp dir"


@needs_launch_ros
def test_real_launch_bad_profile_fails_clearly(installed_prefix: Path, tmp_path: Path) -> None:  # pragma: no cover
    _, output, rc, left = _ros2_launch(
        installed_prefix, tmp_path, installed_prefix / "share" / "lightwam_ros" / "launch" / "policy.launch.py",
        "robot:=no_such_robot", node_name=None)
    assert rc != 0, output
    assert "robot:=no_such_robot" in output and "aloha_3cam" in output, output
    assert left == [], f"the launch left {left} in its temp dir"


def test_docs_document_every_parameter_and_launch_argument() -> None:
    """The reference tables (docs/parameters.md, generated) must not drift from the parameter table and
    the launch args; the README links to them."""
    reference = (REPO_ROOT / "docs" / "parameters.md").read_text()
    rows = {line.split("|")[1].strip().strip("`") for line in reference.splitlines() if line.startswith("| `")}
    missing = [s.name for s in config.PARAMETERS if s.name not in rows]
    assert not missing, f"docs/parameters.md parameter table lacks {missing}"
    missing = [a.name for a in LAUNCH_ARGUMENTS if a.name not in rows]
    assert not missing, f"docs/parameters.md launch argument table lacks {missing}"
    for profile in ("aloha_3cam", "libero_franka", "demo"):
        assert f"{profile}.yaml" in reference
    assert "docs/parameters.md" in (REPO_ROOT / "README.md").read_text()
