"""Launch logic (lightwam_ros.launch_config): profile choice, overrides, namespace, remappings.

The launch system itself (launch, launch_ros) is not installable from PyPI, so the decisions are
tested here as plain Python, and the resolved parameter file is checked against real rcl parsing
(rclpy.init with --params-file, a node in the launched namespace). The node actually started from
a plan's command line is tested in test_node_lifecycle.py.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml

from lightwam_ros import config
from lightwam_ros.launch_config import (
    AUTOSTART_FLAG,
    LAUNCH_ARGUMENTS,
    LaunchConfigError,
    nest_parameters,
    parse_remappings,
    plan_from_arguments,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
LAUNCH_FILE = REPO_ROOT / "launch" / "policy.launch.py"


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


def test_shm_profile_is_set_unless_the_user_chose_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FASTDDS_DEFAULT_PROFILES_FILE", raising=False)
    plan = plan_from_arguments({"robot": "demo"}, share_dir=REPO_ROOT)
    assert plan.additional_env == {"FASTDDS_DEFAULT_PROFILES_FILE": str(REPO_ROOT / "config" / "fastdds_shm.xml")}
    assert plan.environment({})["FASTDDS_DEFAULT_PROFILES_FILE"].endswith("fastdds_shm.xml")
    assert plan_from_arguments({"robot": "demo", "shm_profile": "false"}, share_dir=REPO_ROOT).additional_env == {}
    monkeypatch.setenv("FASTDDS_DEFAULT_PROFILES_FILE", "/etc/my_profile.xml")
    assert plan_from_arguments({"robot": "demo"}, share_dir=REPO_ROOT).additional_env == {}


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


@pytest.mark.skipif(importlib.util.find_spec("launch_ros") is None,
                    reason="launch_ros is not installable from PyPI; the launch file is exercised only "
                           "where ROS 2 is installed (its logic is tested above)")
def test_launch_file_declares_every_argument() -> None:  # pragma: no cover - needs a ROS install
    spec = importlib.util.spec_from_file_location("policy_launch", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ld = module.generate_launch_description()
    declared = {a.name for a in ld.get_launch_arguments()}
    assert declared == {a.name for a in LAUNCH_ARGUMENTS}


def test_readme_documents_every_parameter_and_launch_argument() -> None:
    """The README's reference tables must not drift from the parameter table and the launch args."""
    readme = (REPO_ROOT / "README.md").read_text()
    rows = {line.split("|")[1].strip().strip("`") for line in readme.splitlines() if line.startswith("| `")}
    missing = [s.name for s in config.PARAMETERS if s.name not in rows]
    assert not missing, f"README.md parameter table lacks {missing}"
    missing = [a.name for a in LAUNCH_ARGUMENTS if a.name not in rows]
    assert not missing, f"README.md launch argument table lacks {missing}"
    for profile in ("aloha_3cam", "libero_franka", "demo"):
        assert f"{profile}.yaml" in readme
