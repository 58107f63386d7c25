"""The shared-memory Fast DDS profile (config/fastdds_shm.xml) is really applied, on Fast DDS 2.x and 3.x.

Fast DDS 2.x (Humble, Jazzy) reads the profile from FASTRTPS_DEFAULT_PROFILES_FILE and silently
ignores FASTDDS_DEFAULT_PROFILES_FILE, the 3.x (Kilted) name; 3.x accepts the old name with a
deprecation warning. A profile under the wrong name does nothing visible except that camera-size
images fragment and get lost, so lightwam_ros.ros.dds_profile picks the name by the library in use.

What is checked:
- the library detection on made-up library folders, and on this environment against the installed
  Fast DDS distribution's own version (so `make test-jazzy` checks the Jazzy wheels' 2.x library);
- conftest.py set the profile under the one name this Fast DDS reads (and not the other);
- end to end: a participant started with that environment maps the profile's 16 MiB shared-memory
  segment (the Fast DDS default is about 512 KiB, on 2.x and 3.x alike) and every 480x640 rgb8 frame
  it publishes best-effort arrives in this process. Without the profile the segment check fails
  whatever the luck of delivery; the negative controls show the default segment and the 2.x name trap.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from importlib import metadata
from pathlib import Path

import pytest

from lightwam_ros.ros import dds_profile
from lightwam_ros.ros.dds_profile import NEW_VARIABLE, OLD_VARIABLE, fastdds_major, profile_env, profile_variable

REPO_ROOT = Path(__file__).resolve().parents[2]
FASTDDS_PROFILE = REPO_ROOT / "config" / "fastdds_shm.xml"
PROFILE_SEGMENT_BYTES = 16 * 1024 * 1024  # <segment_size> in config/fastdds_shm.xml
HEIGHT, WIDTH = 480, 640
FRAMES = 20


# ---------------------------------------------------------------------------------------------
# Library detection (no DDS)
# ---------------------------------------------------------------------------------------------

@pytest.fixture
def no_system_libraries(monkeypatch, tmp_path):
    """sys.prefix/lib is always searched (the PyPI wheels' libraries live there): point it at an
    empty folder so only the folders a test names count."""
    empty = tmp_path / "empty_prefix"
    (empty / "lib").mkdir(parents=True)
    monkeypatch.setattr(sys, "prefix", str(empty))


def lib_dir(tmp_path: Path, name: str, *files: str) -> Path:
    d = tmp_path / name
    d.mkdir()
    for f in files:
        (d / f).write_bytes(b"")
    return d


@pytest.mark.parametrize(("files", "major"), [
    (("libfastdds.so.3.2.2", "libfastcdr.so.2"), 3),
    (("libfastdds.so",), 3),
    (("libfastrtps.so.2.14.5", "libfastcdr.so.2"), 2),
    (("libfastrtps.so.2.6",), 2),
    (("libfastcdr.so.2", "librcl.so"), None),
])
def test_major_from_ld_library_path(tmp_path, no_system_libraries, files, major):
    d = lib_dir(tmp_path, "lib", *files)
    env = {"LD_LIBRARY_PATH": f"/nonexistent{os.pathsep}{d}"}
    assert fastdds_major(env) == major
    assert profile_variable(env) == (OLD_VARIABLE if major == 2 else NEW_VARIABLE)


def test_major_from_ament_prefix_and_sys_prefix(tmp_path, monkeypatch, no_system_libraries):
    prefix = tmp_path / "opt_ros_jazzy"
    lib_dir(prefix.parent, prefix.name)
    lib_dir(prefix, "lib", "libfastrtps.so.2.14")
    assert fastdds_major({"AMENT_PREFIX_PATH": f"{tmp_path / 'ws_install'}{os.pathsep}{prefix}"}) == 2
    venv = tmp_path / "venv"
    lib_dir(venv.parent, venv.name)
    lib_dir(venv, "lib", "libfastdds.so.3.2")
    monkeypatch.setattr(sys, "prefix", str(venv))
    assert fastdds_major({}) == 3


def test_first_folder_with_a_fast_dds_library_wins(tmp_path, no_system_libraries):
    """LD_LIBRARY_PATH order is the loader's order: the first folder holding either library decides."""
    old = lib_dir(tmp_path, "old", "libfastrtps.so.2.14.5")
    new = lib_dir(tmp_path, "new", "libfastdds.so.3.2.2")
    assert fastdds_major({"LD_LIBRARY_PATH": f"{old}{os.pathsep}{new}"}) == 2
    assert fastdds_major({"LD_LIBRARY_PATH": f"{new}{os.pathsep}{old}"}) == 3


@pytest.mark.parametrize(("distro", "major"), [
    ("humble", 2), ("jazzy", 2), ("Jazzy\n", 2), ("kilted", 3), ("rolling", 3), ("", None)])
def test_major_from_ros_distro_when_no_library_is_found(tmp_path, no_system_libraries, distro, major):
    assert fastdds_major({"ROS_DISTRO": distro} if distro else {}) == major


def test_profile_env_names_one_variable_and_respects_the_users_profile(tmp_path, no_system_libraries):
    jazzy = {"LD_LIBRARY_PATH": str(lib_dir(tmp_path, "j", "libfastrtps.so.2.14.5"))}
    kilted = {"LD_LIBRARY_PATH": str(lib_dir(tmp_path, "k", "libfastdds.so.3.2.2"))}
    assert profile_env("/p.xml", jazzy) == {OLD_VARIABLE: "/p.xml"}
    assert profile_env(Path("/p.xml"), kilted) == {NEW_VARIABLE: "/p.xml"}
    assert profile_env("/p.xml", {}) == {NEW_VARIABLE: "/p.xml"}  # unknown: the current name
    for user in (OLD_VARIABLE, NEW_VARIABLE):
        assert profile_env("/p.xml", {**jazzy, user: "/mine.xml"}) == {}
        assert profile_env("/p.xml", {**kilted, user: "/mine.xml"}) == {}
    assert profile_env("/p.xml", {**jazzy, NEW_VARIABLE: ""}) == {OLD_VARIABLE: "/p.xml"}  # empty = unset


def installed_fastdds_major() -> int:
    """Major version of the Fast DDS that rmw_fastrtps_cpp links, from the installed distribution
    (PyPI wheels: `ros-fastdds` 3.x for Kilted, `ros-fastrtps` 2.x for Jazzy)."""
    for dist in ("ros-fastdds", "ros-fastrtps"):
        try:
            return int(metadata.version(dist).split(".")[0])
        except metadata.PackageNotFoundError:
            continue
    pytest.skip("Fast DDS does not come from a PyPI wheel here (system ROS 2): no version to compare with")


def test_detects_the_fast_dds_of_this_environment():
    major = installed_fastdds_major()
    assert fastdds_major() == major
    assert dds_profile.profile_variable() == (OLD_VARIABLE if major == 2 else NEW_VARIABLE)


def test_conftest_sets_the_profile_under_the_name_this_fast_dds_reads():
    assert os.environ.get(profile_variable()) == str(FASTDDS_PROFILE)
    other = NEW_VARIABLE if profile_variable() == OLD_VARIABLE else OLD_VARIABLE
    assert other not in os.environ  # 3.x would warn per participant; 2.x would ignore it


# ---------------------------------------------------------------------------------------------
# End to end over DDS
# ---------------------------------------------------------------------------------------------

# The publishing participant, in its own process with exactly the environment a node process gets.
# A process maps the shared-memory segments of every participant it discovers as well as its own, so
# the publisher first claims a ROS_DOMAIN_ID of its own and reports its mappings while it is alone
# there: then every segment listed is its own. The subscriber (this test process) joins that domain
# afterwards. Protocol on stdout, one JSON object a line: {"domain": d, "segments": {file: bytes
# mapped}}, {"matched": n}, {"published": n}; it exits when stdin closes.
PUBLISHER = r"""
import array, json, os, sys, time
sys.path.insert(0, sys.argv[5])
from ros_domain import claim_domain_id
os.environ["ROS_DOMAIN_ID"] = str(claim_domain_id())
import rclpy
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

frames, height, width, topic, rate = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], 10.0

def segments():
    sizes = {}
    with open(f"/proc/{os.getpid()}/maps") as f:
        for line in f:
            parts = line.split()
            if len(parts) < 6 or not parts[5].startswith("/dev/shm/"):
                continue
            name = os.path.basename(parts[5])
            if name.startswith(("fastdds_", "fastrtps_")) and "port" not in name:
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                sizes[name] = sizes.get(name, 0) + hi - lo
    return sizes

def say(**kw):
    print(json.dumps(kw), flush=True)

ctx = rclpy.Context()
rclpy.init(context=ctx)
node = rclpy.create_node("dds_profile_publisher", context=ctx)
qos = QoSProfile(reliability=ReliabilityPolicy.BEST_EFFORT, history=HistoryPolicy.KEEP_LAST, depth=10)
pub = node.create_publisher(Image, topic, qos)
time.sleep(0.2)
say(domain=int(os.environ["ROS_DOMAIN_ID"]), segments=segments())
deadline = time.monotonic() + 30.0
while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
    time.sleep(0.05)
say(matched=pub.get_subscription_count())
time.sleep(1.0)  # the first ~0.6 s after matching can be lost whatever the transport
msg = Image(height=height, width=width, encoding="rgb8", step=width * 3)
frame = bytearray(height * width * 3)
for i in range(frames):
    frame[0] = i
    frame[-1] = 255 - i
    msg.header.frame_id = str(i)
    msg.data = array.array("B", frame)
    pub.publish(msg)
    time.sleep(1.0 / rate)
say(published=frames)
sys.stdin.read()
node.destroy_node()
rclpy.shutdown(context=ctx)
"""


def publish_and_receive(env: dict[str, str], topic: str) -> tuple[int, dict[str, int], set[int]]:
    """Start PUBLISHER with env, subscribe here; returns (published, its own segment sizes, frame ids
    received intact)."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    received: set[int] = set()

    def on_image(msg: Image) -> None:
        i = int(msg.header.frame_id)
        data = msg.data
        if len(data) == HEIGHT * WIDTH * 3 and data[0] == i and data[-1] == 255 - i:
            received.add(i)

    proc = subprocess.Popen(
        [sys.executable, "-c", PUBLISHER, str(FRAMES), str(HEIGHT), str(WIDTH), topic,
         str(REPO_ROOT / "test" / "support")],
        env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    ctx = node = executor = spin = None
    try:
        first = json.loads(proc.stdout.readline() or "{}")
        assert "domain" in first, f"the publisher did not start (exit {proc.poll()}): {first}"
        ctx = rclpy.Context()
        rclpy.init(context=ctx, domain_id=first["domain"])
        node = rclpy.create_node("dds_profile_subscriber", context=ctx)
        qos = QoSProfile(reliability=ReliabilityPolicy.BEST_EFFORT, history=HistoryPolicy.KEEP_LAST, depth=FRAMES)
        node.create_subscription(Image, topic, on_image, qos)
        executor = SingleThreadedExecutor(context=ctx)
        executor.add_node(node)
        spin = threading.Thread(target=executor.spin, daemon=True)
        spin.start()
        lines = [json.loads(line) for line in (proc.stdout.readline(), proc.stdout.readline()) if line]
        assert lines and lines[0].get("matched"), f"the publisher never matched this subscriber: {lines}"
        assert len(lines) == 2 and "published" in lines[1], f"the publisher stopped early (exit {proc.poll()})"
        deadline = time.monotonic() + 5.0
        while len(received) < FRAMES and time.monotonic() < deadline:
            time.sleep(0.05)
        return lines[1]["published"], first["segments"], set(received)
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if executor is not None:
            executor.shutdown()
        if node is not None:
            node.destroy_node()
        if ctx is not None and ctx.ok():
            rclpy.shutdown(context=ctx)
        if spin is not None:
            spin.join(timeout=5)


def test_node_environment_maps_the_big_segment_and_delivers_every_camera_frame():
    """The environment conftest built (the one every node subprocess inherits)."""
    published, segments, received = publish_and_receive(dict(os.environ), "/dds_profile_check/applied")
    assert max(segments.values(), default=0) >= PROFILE_SEGMENT_BYTES, (
        f"no {PROFILE_SEGMENT_BYTES}-byte shared-memory segment, the profile was not applied "
        f"({profile_variable()}={os.environ.get(profile_variable())}; segments {segments})")
    assert received == set(range(published)), f"lost frames {sorted(set(range(published)) - received)}"


def test_without_the_profile_the_segment_is_the_small_default():
    """Negative control: the size check above tells a default participant from one with the profile."""
    env = {k: v for k, v in os.environ.items() if k not in (OLD_VARIABLE, NEW_VARIABLE)}
    _, segments, _ = publish_and_receive(env, "/dds_profile_check/default")
    assert segments, "no Fast DDS shared-memory segment mapped at all (is the SHM transport off?)"
    assert max(segments.values()) < PROFILE_SEGMENT_BYTES, segments


def test_the_other_variable_name():
    """Fast DDS 2.x ignores the 3.x name (the trap dds_profile exists for); 3.x still reads the 2.x name."""
    major = installed_fastdds_major()
    other = NEW_VARIABLE if major == 2 else OLD_VARIABLE
    env = {k: v for k, v in os.environ.items() if k not in (OLD_VARIABLE, NEW_VARIABLE)}
    env[other] = str(FASTDDS_PROFILE)
    _, segments, _ = publish_and_receive(env, "/dds_profile_check/other_name")
    if major == 2:
        assert max(segments.values(), default=0) < PROFILE_SEGMENT_BYTES, segments
    else:
        assert max(segments.values(), default=0) >= PROFILE_SEGMENT_BYTES, segments
