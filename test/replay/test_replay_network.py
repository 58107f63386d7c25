"""The policy on another host: the robot side and the node in two network namespaces joined by a veth link.

Why: on one machine DDS can take shared memory, which hides what a network does to camera frames
(fragmentation, socket buffers, loss). Here the robot side -- live replay publishing the cameras,
joint states and instruction, and recording what comes back for the trajectory executor stand-in --
runs in one namespace, and the policy node (started by the replay through a command prefix, exactly
as the launch file would start it) in the other. Both load config/fastdds_udp.xml (UDPv4 only), so
every frame crosses the link; the link's byte counters prove it. Discovery is the default multicast
on the link's subnet, with the claimed ROS_DOMAIN_ID.

The figures a user wants before putting the node on a GPU host -- delivered frame-set rate, the
frame sets' age at inference, holds -- are printed as a table and recorded in docs/network.md.
Raw rgb8 frames and JPEG CompressedImages (the node's `cameras.transports: compressed`) are run on the
same scene; compressed must deliver at least the frame sets raw delivers. Frame-set age at inference
is derived: the age of a set when its chunk reached the robot side (bag clock) less the node's median
inference time on the bag clock (wall ms x playback rate).

Needs network namespaces (root: CAP_SYS_ADMIN and CAP_NET_ADMIN); skipped with the reason where they
cannot be made.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from netns import VethLink, netns_unavailable, veth_link

from lightwam_ros.config import from_params, load_profile
from lightwam_ros.control.latency_advice import ChunkTiming
from lightwam_ros.demo.run import ExecutorLimits, execute_recorded, paced_rate, read_joint_states
from lightwam_ros.replay.bags import BagReader
from lightwam_ros.replay.options import ReplayError, ReplayOptions
from lightwam_ros.replay.runner import node_plan
from lightwam_ros.ros.dds_profile import NEW_VARIABLE, OLD_VARIABLE

REPO_ROOT = Path(__file__).resolve().parents[2]
BUNDLE = REPO_ROOT / "models" / "demo_tiny_trained"  # the shipped trained tiny model (config/demo.yaml)
DEMO_CHUNK = ChunkTiming(24, 20_000_000)  # its chunks: 24 steps at 50 Hz, one inference at a time
IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
TRANSPORTS = ("raw", "compressed")  # compressed: JPEG quality 90 on <topic>/compressed (cameras.transports)
JPEG_QUALITY = "90"
BAG_SECONDS = 3.0  # 90 frame sets of three 480x640 cameras at 30 Hz: ~250 MB raw
MAKE_BAG_TIMEOUT_S = 120.0
REPLAY_TIMEOUT_S = 420.0  # node start (model load and warm-up) on a busy 2-core machine, the bag, the tail
EXECUTOR_TOPIC = "/demo/arm_controller/joint_trajectory"  # config/demo.yaml output.topic


@dataclass(frozen=True)
class LinkRun:
    """One live replay over the link: its report and what the link's counters saw."""

    transport: str
    report: dict[str, Any]
    output_bag: Path
    bag: Path
    image_bytes: int  # serialized camera messages the robot side published
    policy_rx: dict[str, int]  # the node's end of the link
    robot_tx: dict[str, int]
    log: str


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "lightwam_ros.cli", *args]


def _run_bounded(cmd: list[str], env: dict[str, str], timeout_s: float) -> subprocess.CompletedProcess[str]:
    """Run cmd in its own process group; on timeout kill the group (the node it started included)."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        raise AssertionError(f"{cmd[:6]}... did not finish within {timeout_s} s; output ends:\n{out[-3000:]}") from None
    return subprocess.CompletedProcess(cmd, proc.returncode, out, "")


def _link_env() -> dict[str, str]:
    """The test's environment (ROS_DOMAIN_ID, HOME, log dir) less what conftest sets for one host:
    the replay's --dds-profile udp must be the profile both ends load, and discovery must reach the
    other namespace."""
    env = dict(os.environ)
    for name in (NEW_VARIABLE, OLD_VARIABLE, "ROS_LOCALHOST_ONLY", "ROS_STATIC_PEERS", "FASTDDS_BUILTIN_TRANSPORTS"):
        env.pop(name, None)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "SUBNET"
    env["OMP_NUM_THREADS"] = "1"  # the node runs what paced_rate measured
    return env


def _image_bytes(bag: Path) -> int:
    with BagReader(bag) as reader:
        topics = [t.name for t in reader.info.topics.values() if t.msgtype in IMAGE_TYPES]
        return sum(len(m.raw) for m in reader.messages(topics))


def _make_bag(out: Path, transport: str) -> Path:
    args = ["make-bag", "--scene", "reach", "--seconds", str(BAG_SECONDS), "--size", "480x640", "--out", str(out)]
    if transport == "compressed":
        args += ["--compressed", "jpeg", "--quality", JPEG_QUALITY]
    done = _run_bounded(_cli(*args), dict(os.environ), MAKE_BAG_TIMEOUT_S)
    assert done.returncode == 0, done.stdout[-3000:]
    return out


def _profile(out: Path, transport: str) -> Path:
    """config/demo.yaml with every camera on ``transport``, as a robot's profile would set it."""
    doc = yaml.safe_load((REPO_ROOT / "config" / "demo.yaml").read_text())
    params = doc["lightwam_policy"]["ros__parameters"]
    params["cameras"]["transports"] = [transport] * len(params["cameras"]["names"])
    out.write_text(yaml.safe_dump(doc))
    return out


def _replay_over_link(link: VethLink, bag: Path, profile: Path, out: Path,
                      rate: float) -> subprocess.CompletedProcess[str]:
    cmd = [*link.prefix(link.robot_ns),
           *_cli("replay", "--mode", "live", "--bag", str(bag), "--profile", str(profile), "--bundle", str(BUNDLE),
                 "--out", str(out), "--rate", str(rate), "--dds-profile", "udp", "--no-plot",
                 "--node-prefix", " ".join(link.prefix(link.policy_ns)))]
    return _run_bounded(cmd, _link_env(), REPLAY_TIMEOUT_S)


@pytest.fixture(scope="module")
def link_rate() -> float:
    """The playback rate at which inference fits a chunk on the node's (bag) clock on this machine now
    (the demo's rule, as in test_replay_live): what is asserted then does not depend on the CPU."""
    reason = netns_unavailable()
    if reason:
        pytest.skip(f"no network namespaces here, so no link between two hosts to test: {reason}")
    return paced_rate(BUNDLE, DEMO_CHUNK)


@pytest.fixture(scope="module")
def over_link(tmp_path_factory: pytest.TempPathFactory, link_rate: float) -> Iterator[Callable[[str], LinkRun]]:
    """Replay a fresh bag per transport over a fresh link (counters from zero); each run once per module,
    so the compressed case can compare itself with the raw one."""
    runs: dict[str, LinkRun] = {}
    failed: dict[str, str] = {}  # a run that failed is not repeated for the next test that needs it
    bags: list[Path] = []

    def run(transport: str) -> LinkRun:
        if transport in failed:
            pytest.fail(f"the {transport} run over the link failed before: {failed[transport]}")
        if transport not in runs:
            tmp = tmp_path_factory.mktemp(f"link_{transport}")
            bags.append(tmp / "bag")
            try:
                bag = _make_bag(tmp / "bag", transport)
                profile = _profile(tmp / f"demo_{transport}.yaml", transport)
                with veth_link() as link:
                    done = _replay_over_link(link, bag, profile, tmp / "out", link_rate)
                    policy_rx = link.counters(link.policy_ns, link.policy_if)
                    robot_tx = link.counters(link.robot_ns, link.robot_if)
                assert done.returncode == 0, f"live replay over the link failed:\n{done.stdout[-4000:]}"
                report = json.loads((tmp / "out" / "report.json").read_text())
            except BaseException as exc:
                failed[transport] = str(exc)[:2000]
                raise
            runs[transport] = LinkRun(transport, report, tmp / "out" / "outputs", bag, _image_bytes(bag),
                                      policy_rx, robot_tx, done.stdout)
        return runs[transport]

    yield run
    for bag in bags:  # ~250 MB each for raw frames; the reports and output bags stay
        shutil.rmtree(bag, ignore_errors=True)


def figures(run: LinkRun) -> dict[str, Any]:
    """The row of one run: delivery, age and holds, as docs/network.md reports them."""
    r = run.report
    d, tp = r["delivery"], r["throughput"]
    arrival = r["chunks"]["observation_to_publish_ms"]
    inference_ms = r["node"]["latency_ms"].get("total_ms.p50")
    age_p50 = arrival.get("p50")
    at_inference = None if age_p50 is None or inference_ms is None else age_p50 - inference_ms * tp["rate"]
    by_reason = {k: v for k, v in r["holds"]["by_reason"].items() if v}
    return {
        "transport": run.transport,
        "rate": tp["rate"],
        "image_mb": run.image_bytes / 1e6,
        "link_mb": run.policy_rx["rx_bytes"] / 1e6,
        "sets_published": d["frame_sets_published"],
        "sets_formed": d["frame_sets_formed_by_node"],
        "set_rate_hz": d["frame_sets_formed_by_node"] / tp["bag_s"],
        "sets_used": d["frame_sets_used"],
        "age_at_chunk_ms": age_p50,
        "inference_ms": inference_ms,
        "age_at_inference_ms": at_inference,
        "hold_ticks": sum(by_reason.values()),
        "ticks": r["holds"]["ticks"],
        "holds": by_reason,
    }


def table_lines(runs: list[LinkRun]) -> list[str]:
    def num(v: float | None, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    head = (f"{'transport':<11}{'rate':>5}{'image MB':>9}{'link MB':>8}{'sets pub/formed/used':>21}"
            f"{'set Hz':>7}{'age@chunk':>10}{'infer':>7}{'age@inf':>8}{'holds/ticks':>12}  hold reasons")
    lines = ["policy node over a veth link (UDP profile); Hz and ages on the bag clock, infer in wall ms:", head]
    for run in runs:
        f = figures(run)
        sets = f"{f['sets_published']}/{f['sets_formed']}/{f['sets_used']}"
        lines.append(f"{f['transport']:<11}{f['rate']:>5g}{f['image_mb']:>9.1f}{f['link_mb']:>8.1f}{sets:>21}"
                     f"{f['set_rate_hz']:>7.1f}{num(f['age_at_chunk_ms'], '.0f'):>10}{num(f['inference_ms'], '.0f'):>7}"
                     f"{num(f['age_at_inference_ms'], '.0f'):>8}{str(f['hold_ticks']) + '/' + str(f['ticks']):>12}  "
                     f"{f['holds']}")
    return lines


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_policy_on_another_host_gets_the_frames_over_the_link(transport: str, over_link, capsys) -> None:
    run = over_link(transport)
    raw = over_link("raw")  # the run to compare with (cached: the raw case ran first)
    table = "\n".join(table_lines([raw] if run is raw else [raw, run]))
    with capsys.disabled():  # the figures are the point of the run: shown without -s too
        print("\n" + table)
    d = run.report["delivery"]
    # every camera message went through the link: its counters saw at least the images' bytes (shared
    # memory would have carried them past it, leaving only discovery and small messages)
    assert run.policy_rx["rx_bytes"] > run.image_bytes > 0, (run.policy_rx, run.image_bytes)
    assert run.robot_tx["tx_bytes"] >= run.policy_rx["rx_bytes"], (run.robot_tx, run.policy_rx)
    assert d["frames_published"] == 3 * d["frame_sets_published"] == 3 * round(BAG_SECONDS * 30), d
    # the node formed sets from what arrived, inferred, and its commands came back over the link
    assert d["frame_sets_formed_by_node"] >= 1 and d["frame_sets_used"] >= 1, table
    topics = run.report["outputs"]["topics"]
    assert topics.get(EXECUTOR_TOPIC, 0) >= 1, (topics, table)
    # ... and a JointTrajectoryController would have executed them
    _, params = load_profile("demo")
    cfg = from_params({**params, "bundle": str(BUNDLE)})  # the executor needs joints and limits only
    executor = execute_recorded(run.output_bag, EXECUTOR_TOPIC, ExecutorLimits.from_config(cfg),
                                read_joint_states(run.bag, cfg.joints.state_topic, cfg.output.joint_names))
    assert executor.report.trajectories == topics[EXECUTOR_TOPIC]
    assert not executor.report.violations, executor.report.violations[:5]
    # tens of KB per frame instead of 0.9 MB: the node forms every set raw frames gave it, or more
    assert d["frame_sets_formed_by_node"] >= raw.report["delivery"]["frame_sets_formed_by_node"], table


def test_options_for_a_node_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pure: the profile name reaches the node's plan (and so the replay's own participant), and a
    prefix is refused where no node process is started."""
    monkeypatch.delenv(NEW_VARIABLE, raising=False)
    monkeypatch.delenv(OLD_VARIABLE, raising=False)
    base = {"bag": "b", "profile": "demo", "out": "o", "bundle": str(BUNDLE)}
    plan, _ = node_plan(ReplayOptions(**base, mode="live", dds_profile="udp", node_prefix=["ip", "netns", "exec", "x"]))
    assert [Path(v).name for v in plan.additional_env.values()] == ["fastdds_udp.xml"]
    assert node_plan(ReplayOptions(**base, mode="live", dds_profile="none"))[0].additional_env == {}
    with pytest.raises(ReplayError, match="--dds-profile must be one of"):
        ReplayOptions(**base, mode="live", dds_profile="tcp")
    with pytest.raises(ReplayError, match="--node-prefix .* needs --mode live"):
        ReplayOptions(**base, node_prefix=["ip", "netns", "exec", "x"])
