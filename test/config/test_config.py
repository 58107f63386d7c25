"""lightwam_ros.config: the parameter table, validation messages, profile loading, bundle checks, updates."""

from __future__ import annotations

import textwrap

import pytest

from lightwam_ros import config as C
from lightwam_ros.config import (
    Backend,
    BundleInfo,
    ConfigError,
    DType,
    MergeMode,
    OutputMode,
    apply_updates,
    declarations,
    from_params,
    load_profile,
    profiles,
    resolve_bundle_path,
    validate_against_bundle,
)

N = 14
BASE = {
    "bundle": "models/demo",
    "cameras.names": ["head", "left_wrist", "right_wrist"],
    "cameras.topics": ["cam_high/image_raw", "cam_left/image_raw", "/robot/cam_right/image_raw"],
    "joints.names": [f"joint{i}" for i in range(N)],
    "safety.position_min": [-1.5] * N,
    "safety.position_max": [1.5] * N,
    "safety.max_step": [0.05] * N,
}
BUNDLE = BundleInfo(cameras=("left_wrist", "head", "right_wrist"), state_names=tuple(f"joint{i}" for i in range(N)),
                    action_names=tuple(f"joint{i}" for i in range(N)), trained_steps=24, action_rate_hz=50.0)


def cfg(**overrides):
    return from_params({**BASE, **overrides})


def raises(param: str, fn, *args, **kwargs) -> ConfigError:
    with pytest.raises(ConfigError) as ei:
        fn(*args, **kwargs)
    assert ei.value.parameter == param, str(ei.value)
    assert f"'{param}'" in str(ei.value)
    return ei.value


# The parameter table as documented, typed out independently of config/parameters.py: (name, type, default).
PARAMETER_TABLE = [
    ("bundle", "STRING", ""), ("backend", "STRING", "torch"), ("device", "STRING", "auto"),
    ("dtype", "STRING", "bfloat16"), ("control_rate_hz", "DOUBLE", 50.0), ("dry_run", "BOOL", False),
    ("cameras.names", "STRING_ARRAY", None), ("cameras.topics", "STRING_ARRAY", None),
    ("cameras.transports", "STRING_ARRAY", []), ("cameras.jpeg_decode", "STRING", "full"),
    ("sync.slop", "DOUBLE", 0.02), ("sync.queue_size", "INTEGER", 10), ("sync.max_age", "DOUBLE", 0.25),
    ("sync.camera_timeout", "DOUBLE", 0.5), ("joints.state_topic", "STRING", "joint_states"),
    ("joints.names", "STRING_ARRAY", None), ("joints.max_age", "DOUBLE", 0.25),
    ("instruction.topic", "STRING", "instruction"), ("instruction.default", "STRING", ""),
    ("chunk.merge", "STRING", "blend"), ("chunk.blend_steps", "INTEGER", 4), ("chunk.execute_steps", "INTEGER", 0),
    ("chunk.latency_margin", "DOUBLE", 0.5), ("chunk.refusal_backoff_max", "DOUBLE", 5.0),
    ("chunk.refusal_error_count", "INTEGER", 3), ("chunk.ensemble_decay", "DOUBLE", 0.01),
    ("output.mode", "STRING", "joint_trajectory"),
    ("output.topic", "STRING", "joint_trajectory"), ("output.joint_names", "STRING_ARRAY", []),
    ("output.send_velocities", "BOOL", False), ("output.trajectory_steps", "INTEGER", 0),
    ("output.trajectory_start_delay", "DOUBLE", 0.0),
    ("safety.position_min", "DOUBLE_ARRAY", None), ("safety.position_max", "DOUBLE_ARRAY", None),
    ("safety.max_step", "DOUBLE_ARRAY", None), ("debug.canvas_rate_hz", "DOUBLE", 2.0),
    ("diagnostics.rate_hz", "DOUBLE", 1.0), ("text.encoder", "STRING", "none"), ("text.device", "STRING", "cpu"),
    ("text.wan_dir", "STRING", ""), ("text.cache_dir", "STRING", ""),
]


@pytest.mark.parametrize("name,type_name,default", PARAMETER_TABLE)
def test_table_matches_parameter_table(name, type_name, default):
    spec = C.SPECS[name]
    assert spec.type.name == type_name
    assert spec.default == default
    assert spec.description


def test_only_documented_extra_parameter():
    assert set(C.SPECS) - {n for n, _, _ in PARAMETER_TABLE} == {"safety.refuse_margin", "chunk.max_inflight",
                                                            "control.realtime_priority", "control.switch_interval",
                                                            "joints.future_tolerance", "output.action_space",
                                                            "output.hold_command"}


def test_camera_transports_default_to_raw_and_are_checked():
    c = cfg()
    assert c.cameras.transports == ("raw",) * len(c.cameras.names)
    assert [c.cameras.subscribed_topic(n) for n in c.cameras.names] == list(c.cameras.topics)
    n = len(BASE["cameras.names"])
    c = cfg(**{"cameras.transports": ["compressed"] + ["raw"] * (n - 1)})
    assert c.cameras.subscribed_topic(BASE["cameras.names"][0]) == BASE["cameras.topics"][0] + "/compressed"
    assert c.cameras.compressed(BASE["cameras.names"][0]) and not c.cameras.compressed(BASE["cameras.names"][1])
    raises("cameras.transports", cfg, **{"cameras.transports": ["compressed"]})
    raises("cameras.transports", cfg, **{"cameras.transports": ["theora"] * n})
    assert c.cameras.jpeg_decode == "full"
    assert cfg(**{"cameras.jpeg_decode": "reduced"}).cameras.jpeg_decode == "reduced"
    raises("cameras.jpeg_decode", cfg, **{"cameras.jpeg_decode": "half"})


def test_max_inflight_parameter():
    spec = C.SPECS["chunk.max_inflight"]
    assert spec.type.name == "INTEGER" and spec.default == 2 and spec.range == (1, 4) and not spec.runtime


def test_refusal_parameters():
    """The refused-chunk back-off and escalation: runtime, in ns on the config, bounded."""
    assert cfg().chunk.refusal_backoff_max_ns == 5 * 10**9 and cfg().chunk.refusal_error_count == 3
    c = cfg(**{"chunk.refusal_backoff_max": 0.0, "chunk.refusal_error_count": 1})
    assert c.chunk.refusal_backoff_max_ns == 0 and c.chunk.refusal_error_count == 1
    for name in ("chunk.refusal_backoff_max", "chunk.refusal_error_count"):
        assert C.SPECS[name].runtime
    raises("chunk.refusal_backoff_max", cfg, **{"chunk.refusal_backoff_max": -1.0})
    raises("chunk.refusal_error_count", cfg, **{"chunk.refusal_error_count": 0})
    raises("chunk.refusal_backoff_max", C.ChunkConfig, refusal_backoff_max_ns=-1)
    raises("chunk.refusal_error_count", C.ChunkConfig, refusal_error_count=0)


def test_realtime_parameters():
    assert cfg().realtime == C.RealtimeConfig(priority=0, switch_interval_s=0.0)
    assert cfg(**{"control.realtime_priority": 80, "control.switch_interval": 0.001}).realtime == \
        C.RealtimeConfig(80, 0.001)
    for name in ("control.realtime_priority", "control.switch_interval"):
        assert not C.SPECS[name].runtime
    raises("control.realtime_priority", cfg, **{"control.realtime_priority": 100})
    raises("control.switch_interval", cfg, **{"control.switch_interval": 0.5})
    raises("control.switch_interval", cfg, **{"control.switch_interval": -0.001})


def test_declarations_are_rclpy_ready():
    from rclpy.parameter import Parameter

    decl = {d.name: d for d in declarations()}
    assert list(decl) == [s.name for s in C.PARAMETERS]
    for d in decl.values():
        Parameter.Type[d.type_name]  # a valid rclpy type name
        assert d.default != []  # rclpy infers [] as BYTE_ARRAY: empty lists must be declared by type
    assert decl["cameras.names"].default is None and "required" in decl["cameras.names"].constraints
    assert decl["output.joint_names"].default is None
    assert decl["control_rate_hz"].float_range == (0.0, 1000.0) and decl["control_rate_hz"].integer_range is None
    assert decl["sync.queue_size"].integer_range == (1, 1000)
    assert "one of: torch, onnx" in decl["backend"].constraints
    assert decl["bundle"].read_only_when_configured and not decl["chunk.merge"].read_only_when_configured


def test_defaults_become_nanoseconds_and_enums():
    c = cfg()
    assert c.backend is Backend.TORCH and c.dtype is DType.BFLOAT16 and c.device == "auto"
    assert c.sync.slop_ns == 20_000_000 and c.sync.queue_size == 10
    assert c.sync.max_age_ns == 250_000_000 and c.sync.camera_timeout_ns == 500_000_000
    assert c.joints.max_age_ns == 250_000_000 and c.joints.state_topic == "joint_states"
    assert c.chunk.merge is MergeMode.BLEND and c.chunk.blend_steps == 4 and c.chunk.latency_margin == 0.5
    assert c.output.mode is OutputMode.JOINT_TRAJECTORY
    assert c.output.joint_names == tuple(BASE["joints.names"])  # defaults to joints.names
    assert c.control_period_ns == 20_000_000
    assert c.cameras.topic_of["left_wrist"] == "cam_left/image_raw"
    assert c.safety.refuse_margin == 0.25 and c.safety.dim == N
    assert c.params["sync.slop"] == 0.02 and c.params["output.joint_names"] == []


def test_chunk_steps_limit_never_exceeds_trained():
    assert cfg().chunk.steps_limit(24) == 24
    assert cfg(**{"chunk.execute_steps": 10}).chunk.steps_limit(24) == 10
    assert cfg(**{"chunk.execute_steps": 30}).chunk.steps_limit(24) == 24


@pytest.mark.parametrize("param", ["bundle", "cameras.names", "cameras.topics", "joints.names",
                                   "safety.position_min", "safety.position_max", "safety.max_step"])
def test_required_parameters(param):
    p = dict(BASE)
    del p[param]
    e = raises(param, from_params, p)
    assert "required" in str(e)
    raises(param, from_params, {**BASE, param: [] if param != "bundle" else ""})


def test_camera_lists_must_match():
    e = raises("cameras.topics", cfg, **{"cameras.topics": ["a", "b"]})
    assert "2 topics" in str(e) and "3 cameras" in str(e)
    raises("cameras.names", cfg, **{"cameras.names": ["a", "a", "b"]})
    raises("cameras.topics", cfg, **{"cameras.topics": ["a", "a", "b"]})
    raises("cameras.topics", cfg, **{"cameras.topics": ["a", "b c", "d"]})
    raises("cameras.topics", cfg, **{"cameras.topics": ["a", "b//c", "d"]})
    raises("cameras.topics", cfg, **{"cameras.topics": ["a", "2cam", "d"]})
    assert cfg(**{"cameras.topics": ["~/a", "/b/c_1", "x/y"]}).cameras.topics[0] == "~/a"


@pytest.mark.parametrize("param,value,fragment", [
    ("backend", "tensorrt", "one of torch, onnx"),
    ("dtype", "fp16", "float32"),
    ("chunk.merge", "crossfade", "replace, blend"),
    ("output.mode", "position", "joint_trajectory"),
    ("text.encoder", "t5", "umt5"),
    ("control_rate_hz", 0.0, "(0.0, 1000.0]"),
    ("control_rate_hz", 1000.5, "outside"),
    ("sync.slop", 0.0, "outside"),
    ("sync.queue_size", 0, "outside"),
    ("chunk.blend_steps", -1, "outside"),
    ("chunk.latency_margin", -0.1, "outside"),
    ("chunk.max_inflight", 0, "outside"),
    ("chunk.max_inflight", 5, "outside"),
    ("diagnostics.rate_hz", 0.0, "outside"),
    ("device", "gpu", "auto, cpu, cuda"),
    ("text.device", "auto", "cpu, cuda"),
    ("dry_run", "false", "true or false"),
    ("sync.queue_size", 3.0, "integer"),
    ("sync.queue_size", True, "integer"),
    ("control_rate_hz", "50", "number"),
    ("control_rate_hz", float("nan"), "finite"),
    ("joints.names", "joint0", "list"),
    ("safety.max_step", [0.1] * (N - 1) + ["x"], "number"),
])
def test_bad_values_name_the_parameter(param, value, fragment):
    e = raises(param, cfg, **{param: value})
    assert fragment in str(e)


def test_valid_edge_values():
    assert cfg(control_rate_hz=1000.0).control_period_ns == 1_000_000
    assert cfg(control_rate_hz=30).control_rate_hz == 30.0  # python ints are fine outside YAML
    assert cfg(device="cuda:1").device == "cuda:1"
    assert cfg(**{"debug.canvas_rate_hz": 0.0}).canvas_rate_hz == 0.0


def test_unknown_parameter_with_suggestion_and_ros_builtins():
    e = raises("sync.slope", cfg, **{"sync.slope": 0.01})
    assert "did you mean 'sync.slop'" in str(e)
    assert cfg(use_sim_time=True, **{"qos_overrides./cam.subscription.depth": 5}).bundle == "models/demo"


def test_safety_arrays():
    e = raises("safety.position_max", cfg, **{"safety.position_max": [1.0] * (N - 1)})
    assert "13 values" in str(e) and "14" in str(e)
    raises("safety.max_step", cfg, **{"safety.max_step": [0.1] * (N + 1)})
    e = raises("safety.position_max", cfg,
               **{"safety.position_min": [0.0] * N, "safety.position_max": [-1.0] + [1.0] * (N - 1)})
    assert "dim 0" in str(e)
    raises("safety.max_step", cfg, **{"safety.max_step": [0.05] * (N - 1) + [0.0]})
    raises("safety.refuse_margin", cfg, **{"safety.refuse_margin": -1.0})


def test_output_joint_names_must_cover_action_dims():
    e = raises("output.joint_names", cfg, **{"joints.names": [f"j{i}" for i in range(8)]})
    assert "defaults to joints.names" in str(e)
    raises("output.joint_names", cfg, **{"output.joint_names": ["a", "b"]})
    ok = cfg(**{"joints.names": [f"j{i}" for i in range(8)], "output.mode": "none"})
    assert ok.output.mode is OutputMode.NONE
    custom = cfg(**{"output.joint_names": [f"arm_{i}" for i in range(N)]})
    assert custom.output.joint_names[0] == "arm_0"


def test_text_encoder_needs_wan_dir():
    raises("text.wan_dir", cfg, **{"text.encoder": "umt5"})
    assert cfg(**{"text.encoder": "umt5", "text.wan_dir": "/w"}).text.wan_dir == "/w"


# --- profiles ---------------------------------------------------------------------------------

PROFILE = """
lightwam_policy:
  ros__parameters:
    bundle: models/demo   # bundle dir
    control_rate_hz: 50.0  # Hz
    cameras:
      names: [head, left_wrist, right_wrist]
      topics: [cam_high/image_raw, cam_left/image_raw, cam_right/image_raw]
    sync:
      slop: 0.015
      queue_size: 5
    joints:
      names: [j0, j1]
    safety:
      position_min: [-1.0, -2.0]
      position_max: [1.0, 2.0]
      max_step: [0.05, 0.05]
    output:
      mode: forward
"""


def write(tmp_path, text, name="robot.yaml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def test_load_profile_flattens_nested_keys(tmp_path):
    node, flat = load_profile(write(tmp_path, PROFILE))
    assert node == "lightwam_policy"
    assert flat["sync.slop"] == 0.015 and flat["sync.queue_size"] == 5
    assert flat["cameras.names"] == ["head", "left_wrist", "right_wrist"]
    assert flat["safety.position_min"] == [-1.0, -2.0]
    c = from_params(flat)
    assert c.sync.slop_ns == 15_000_000 and c.output.mode is OutputMode.FORWARD


def test_load_profile_wildcard_then_node_override(tmp_path):
    text = PROFILE + """
/**:
  ros__parameters:
    use_sim_time: true
    sync:
      slop: 0.5
      max_age: 0.1
"""
    node, flat = load_profile(write(tmp_path, text))
    assert flat["sync.slop"] == 0.015  # node entry wins
    assert flat["sync.max_age"] == 0.1  # wildcard fills the rest
    assert flat["use_sim_time"] is True


def test_load_profile_namespaced_and_renamed_nodes(tmp_path):
    node, flat = load_profile(write(tmp_path, "/robot1/my_policy:\n  ros__parameters:\n    dry_run: true\n"))
    assert node == "my_policy" and flat == {"dry_run": True}
    node, flat = load_profile(write(tmp_path,
                                    "robot1:\n  lightwam_policy:\n    ros__parameters:\n      dry_run: true\n"))
    assert node == "lightwam_policy" and flat == {"dry_run": True}
    two = "a:\n  ros__parameters:\n    dry_run: true\nlightwam_policy:\n  ros__parameters:\n    dry_run: false\n"
    assert load_profile(write(tmp_path, two)) == ("lightwam_policy", {"dry_run": False})
    e = raises("robot", load_profile, write(tmp_path, two), node_name="other")
    assert "none for 'other'" in str(e)


def test_load_profile_applies_ros_types(tmp_path):
    e = raises("control_rate_hz", load_profile, write(tmp_path, "/**:\n  ros__parameters:\n    control_rate_hz: 50\n"))
    assert "write 50.0" in str(e)
    raises("safety.max_step", load_profile,
           write(tmp_path, "/**:\n  ros__parameters:\n    safety:\n      max_step: [1, 2]\n"))


def test_load_profile_errors_name_the_file(tmp_path):
    p = write(tmp_path, "/**:\n  ros__parameters:\n    sync:\n      slopp: 0.1\n")
    e = raises("sync.slopp", load_profile, p)
    assert str(p) in str(e) and "did you mean 'sync.slop'" in str(e)
    e = raises("robot", load_profile, write(tmp_path, "lightwam_policy:\n  params: {}\n"))
    assert "ros__parameters" in str(e)
    e = raises("robot", load_profile, write(tmp_path, "a: [1\n"))
    assert "not valid YAML" in str(e)
    raises("robot", load_profile, tmp_path / "missing.yaml")


def test_bare_profile_name_resolves_in_installed_share(tmp_path, monkeypatch):
    share = tmp_path / "share" / "lightwam_ros" / "config"
    share.mkdir(parents=True)
    (share / "my_robot_xyz.yaml").write_text(textwrap.dedent(PROFILE))
    monkeypatch.setattr(profiles.sys, "prefix", str(tmp_path))  # the share dir profiles.py looks in
    node, flat = load_profile("my_robot_xyz")
    assert flat["sync.queue_size"] == 5
    e = raises("robot", load_profile, "no_such_robot_xyz")
    assert "my_robot_xyz" in str(e) and str(share) in str(e)


def test_resolve_bundle_path(tmp_path, monkeypatch):
    assert resolve_bundle_path(tmp_path) == tmp_path
    (tmp_path / "b1").mkdir()
    monkeypatch.chdir(tmp_path)
    assert resolve_bundle_path("b1") == tmp_path / "b1"
    e = raises("bundle", resolve_bundle_path, "nope_bundle_xyz")
    assert "nope_bundle_xyz" in str(e)


# --- bundle cross-checks -------------------------------------------------------------------------

def test_validate_against_bundle_ok_and_warnings():
    assert validate_against_bundle(cfg(), BUNDLE) == []
    w = validate_against_bundle(cfg(control_rate_hz=25.0), BUNDLE)
    assert len(w) == 1 and "skipped" in w[0]
    # no action rate: the time between steps is unknown, so configure refuses (names how to fix it)
    e = raises("bundle", validate_against_bundle, cfg(), BundleInfo(**{**BUNDLE.__dict__, "action_rate_hz": None}))
    assert "--action-rate-hz" in str(e)


def test_validate_against_bundle_names_the_parameter():
    e = raises("cameras.names", validate_against_bundle,
               cfg(**{"cameras.names": ["head", "left_wrist", "front"]}), BUNDLE)
    assert "missing ['right_wrist']" in str(e) and "unknown ['front']" in str(e)
    small = BundleInfo(BUNDLE.cameras, tuple(f"s{i}" for i in range(7)), tuple(f"a{i}" for i in range(7)), 8)
    raises("joints.names", validate_against_bundle, cfg(), small)
    raises("safety.position_min", validate_against_bundle,
           cfg(**{"joints.names": [f"j{i}" for i in range(7)], "output.mode": "none"}), small)
    raises("chunk.execute_steps", validate_against_bundle, cfg(**{"chunk.execute_steps": 25}), BUNDLE)
    assert validate_against_bundle(cfg(**{"chunk.execute_steps": 24}), BUNDLE) == []


def test_bundle_info_from_manifest():
    manifest = {"embodiment": {"cameras": ["a", "b"], "state_names": ["s"], "action_names": ["x", "y"],
                               "trained_steps": 24, "action_rate_hz": None, "layout": {}}}
    info = BundleInfo.from_manifest(manifest)
    assert info == BundleInfo(("a", "b"), ("s",), ("x", "y"), 24, None) and info.action_dim == 2


# --- runtime updates --------------------------------------------------------------------------

def test_runtime_update_applies():
    c = cfg()
    r = apply_updates(c, {"chunk.merge": "replace", "sync.slop": 0.03, "safety.max_step": [0.1] * N})
    assert r.ok and r.reason == ""
    assert r.config.chunk.merge is MergeMode.REPLACE and r.config.sync.slop_ns == 30_000_000
    assert r.config.safety.max_step == (0.1,) * N
    assert c.chunk.merge is MergeMode.BLEND  # the old config is untouched


@pytest.mark.parametrize("param,value", [("bundle", "other"), ("backend", "onnx"), ("device", "cpu"),
                                         ("dtype", "float32"), ("cameras.topics", ["a", "b", "c"]),
                                         ("output.mode", "forward"), ("control_rate_hz", 100.0)])
def test_runtime_update_refuses_read_only(param, value):
    r = apply_updates(cfg(), {param: value, "dry_run": True})
    assert not r.ok and r.config is None
    assert f"'{param}'" in r.reason and "read-only" in r.reason


def test_runtime_update_same_value_of_read_only_is_fine():
    r = apply_updates(cfg(), {"bundle": "models/demo", "use_sim_time": False})
    assert r.ok


def test_runtime_update_validates_whole_set():
    r = apply_updates(cfg(), {"sync.slop": -1.0})
    assert not r.ok and "'sync.slop'" in r.reason
    r = apply_updates(cfg(), {"safety.max_step": [0.1] * 3})
    assert not r.ok and "'safety.max_step'" in r.reason
    r = apply_updates(cfg(), {"chunk.execute_steps": 30}, bundle=BUNDLE)
    assert not r.ok and "'chunk.execute_steps'" in r.reason
    r = apply_updates(cfg(), {"sync.slopp": 0.1})
    assert not r.ok and "unknown" in r.reason


def test_a_diagnostics_rate_too_small_for_a_timer_is_refused_by_name() -> None:
    """1e-300 Hz passed the (0, 100] range and made the node's timer period overflow (OverflowError
    naming nothing); the range now starts at one report per 100 s."""
    from lightwam_ros.config.profiles import load_profile

    _, params = load_profile("demo")
    for rate in (1e-300, 0.001):
        with pytest.raises(ConfigError, match="diagnostics.rate_hz"):
            from_params({**params, "diagnostics.rate_hz": rate})
    assert from_params({**params, "diagnostics.rate_hz": 0.01}).diagnostics_rate_hz == 0.01
