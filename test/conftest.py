"""Shared pytest setup: an isolated ROS 2 graph per test process and the tiny demo bundle.

Why at import time: rclpy (and every subprocess a test starts) reads ROS_DOMAIN_ID, HOME and the
Fast DDS profile from the environment when it initializes, so they must be set before any test
module imports or initializes rclpy.

- ROS_DOMAIN_ID: one free domain per pytest process, claimed with an flock on a file under the
  temp dir, so parallel test runs on the same machine (other checkouts, CI) never see each other's
  topics. The lock dies with the process.
- ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST: never discover participants on other hosts
  (ROS_LOCALHOST_ONLY has no effect in Kilted).
- config/fastdds_shm.xml as the Fast DDS profile: camera-size images are delivered completely
  through a large shared-memory segment. Set under the variable the Fast DDS in use reads
  (lightwam_ros.ros.dds_profile: FASTRTPS_DEFAULT_PROFILES_FILE on 2.x/Jazzy, FASTDDS_ on 3.x/Kilted);
  a 2.x library silently ignores the 3.x name. test_dds_profile.py checks that it takes effect.
- HOME / ROS_LOG_DIR: rclpy.init() fails without a place for its logs.

Marker `ros`: set automatically on the tests that touch rclpy, ROS messages or DDS, or start the
node (see _touches_ros); `make test-jazzy` runs exactly those under another ROS distro.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import pytest
from ros_domain import claim_domain_id  # test/support, on sys.path by pyproject.toml's pytest pythonpath

from lightwam_ros.ros.dds_profile import NEW_VARIABLE, OLD_VARIABLE, profile_env

REPO_ROOT = Path(__file__).resolve().parents[1]
SUPPORT_DIR = REPO_ROOT / "test" / "support"
FASTDDS_PROFILE = REPO_ROOT / "config" / "fastdds_shm.xml"


def _isolate_ros_environment() -> None:
    if "LIGHTWAM_TEST_DOMAIN_ID" in os.environ:  # set by an outer run (pytest inside a test)
        os.environ["ROS_DOMAIN_ID"] = os.environ["LIGHTWAM_TEST_DOMAIN_ID"]
    else:
        os.environ["ROS_DOMAIN_ID"] = str(claim_domain_id())
        os.environ["LIGHTWAM_TEST_DOMAIN_ID"] = os.environ["ROS_DOMAIN_ID"]
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ.pop("ROS_LOCALHOST_ONLY", None)
    os.environ.pop("FASTDDS_BUILTIN_TRANSPORTS", None)
    for name in (OLD_VARIABLE, NEW_VARIABLE):  # ours, under the one name this Fast DDS reads
        os.environ.pop(name, None)
    os.environ.update(profile_env(FASTDDS_PROFILE))
    if not os.environ.get("HOME") or not os.access(os.environ["HOME"], os.W_OK):
        os.environ["HOME"] = tempfile.mkdtemp(prefix="lightwam_test_home_")
    log_dir = Path(tempfile.gettempdir()) / f"lightwam_test_roslog_{os.getpid()}"
    log_dir.mkdir(exist_ok=True)
    os.environ.setdefault("ROS_LOG_DIR", str(log_dir))


_isolate_ros_environment()


@pytest.fixture(scope="session")
def ros_domain_id() -> int:
    """The ROS_DOMAIN_ID this test process (and the subprocesses it starts) uses."""
    return int(os.environ["ROS_DOMAIN_ID"])


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny demo bundle (deterministic random weights), built once per test session.

    Built by the same library function as `lightwam demo-bundle`, so the tests load exactly what
    users get from `make demo`.
    """
    from lightwam_ros.demo.tiny_bundle import write_demo_bundle

    out = tmp_path_factory.mktemp("bundles") / "demo_tiny"
    write_demo_bundle(out, size="tiny", seed=0)
    return out


@pytest.fixture
def sim_factory(tiny_bundle: Path):
    """Start real PolicyNodes on a simulated clock (test/support/fault_sim.py); all are closed at teardown."""
    from fault_sim import start

    sims = []

    def make(**kw):
        sims.append(start(tiny_bundle, **kw))
        return sims[-1]
    yield make
    for s in sims:
        s.close()


# What makes a test module a `ros` one, read from its source and from the test/support helper modules it
# imports (fault_sim, node_harness, ...): an import line of rclpy or of a ROS interface package (*_msgs,
# *_srvs) -- at any indentation, so inside functions and in scripts the test runs count -- or a name of
# the package modules that start a node process or DDS participants (node, replay -> live replay, demo).
# Import lines, not words: a docstring saying "no rclpy", a check that rclpy stays unloaded, or a
# message type string for rosbags ('sensor_msgs/msg/Image') touches no ROS, and such pure tests belong
# in `make test-unit`. Static on purpose: most modules import rclpy lazily inside functions, so what is
# imported at collection time says nothing. Erring towards `ros` only costs time under `make test-jazzy`.
_ROS_SOURCE = re.compile(
    r"^\s*(?:import|from)\s+(?:rclpy|[a-z0-9_]+_(?:msgs|srvs))\b"
    r"|\blightwam_ros\.(?:ros\.node|replay\.runner|replay\.live|demo\.run)\b"
    r"|\bfrom\s+lightwam_ros\.(?:ros|replay|demo)\s+import\s+[^\n]*\b(?:node|runner|live|run)\b", re.M)
_ROS_FIXTURES = frozenset({"sim_factory", "ros_domain_id"})
_touches_ros_cache: dict[Path, bool] = {}


def _touches_ros(path: Path, _seen: frozenset[Path] = frozenset()) -> bool:
    path = path.resolve()
    if path not in _touches_ros_cache:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError:
            text = ""
        helpers = (SUPPORT_DIR / f"{name}.py" for name in re.findall(r"^\s*(?:from|import)\s+(\w+)", text, re.M))
        _touches_ros_cache[path] = bool(_ROS_SOURCE.search(text)) or any(
            h.is_file() and h.resolve() not in _seen and _touches_ros(h, _seen | {path}) for h in helpers)
    return _touches_ros_cache[path]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _ROS_FIXTURES.intersection(getattr(item, "fixturenames", ())) or _touches_ros(Path(str(item.path))):
            item.add_marker(pytest.mark.ros)
