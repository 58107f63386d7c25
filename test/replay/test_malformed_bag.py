"""Malformed bags and messages: a message that does not decode is counted and skipped by replay
(offline and live), a broken bag is one BagError naming it, and `lightwam replay` exits 2 with one
error line.

Before: a corrupt or mistyped message ended offline replay with rclpy's RMWError (and live replay
published it to the node); the reference track raised BagError at the end of the run; a garbage
custom message definition raised TypesysError, a self-referencing one RecursionError on decode; a
non-UTF-8 metadata.yaml raised UnicodeDecodeError, a deeply nested one RecursionError, a topic name
or type of the wrong YAML type TypeError, a version of .nan ValueError, and an alias bomb in it was
accepted; a damaged sqlite3 file raised apsw.CorruptError in the middle of the run.
"""

from __future__ import annotations

import logging
import shutil
import struct
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from lightwam_ros.cli import main as cli_main
from lightwam_ros.commands.replay import summary_lines
from lightwam_ros.control.latency_advice import ChunkTiming
from lightwam_ros.demo.run import paced_rate
from lightwam_ros.demo.synthetic import DEFAULT_INSTRUCTION, SyntheticBagSpec, TimedInstruction, write_synthetic_bag
from lightwam_ros.replay.bags import (
    BagError,
    BagMessage,
    BagReader,
    BagWriter,
    joint_state_payload,
    read_bag_info,
    transient_local_qos,
)
from lightwam_ros.replay.options import ReplayOptions
from lightwam_ros.replay.runner import run_replay

SPEC = SyntheticBagSpec(height=48, width=64, rate_hz=10.0, seconds=1.0, jitter_ms=0.0,
                        instructions=(TimedInstruction(DEFAULT_INSTRUCTION),))
CAM_HIGH, CAM_LEFT = SPEC.camera_topic("cam_high"), SPEC.camera_topic("cam_left_wrist")
JOINTS, INSTRUCTION = SPEC.joint_state_topic, SPEC.instruction_topic
DEMO_CHUNK = ChunkTiming(24, 20_000_000)  # the demo profile's chunks: 24 steps at 50 Hz
HUGE_FROM, HUGE_TO = 50, 80  # joint states (100 Hz) with a 1e308 position: 0.5 s to 0.8 s into the bag

TYPES = get_typestore(Stores.ROS2_KILTED)

Mutate = Callable[[BagMessage, int], bytes]


def rewrite(src: Path, dst: Path, mutate: Mutate, storage: str = "mcap") -> Path:
    """Copy of bag ``src`` with every message's bytes replaced by mutate(message, its index on its topic)."""
    seen: dict[str, int] = {}
    with BagReader(src) as r, BagWriter(dst, storage=storage) as w:
        for t in r.info.topics.values():
            w.add_topic(t.name, t.msgtype, qos=[transient_local_qos()] if t.transient_local else ())
        for m in r.messages():
            i = seen.get(m.topic, 0)
            seen[m.topic] = i + 1
            w.write_raw(m.topic, m.log_ns, mutate(m, i))
    return dst


def lying_sequence_length(raw: bytes) -> bytes:
    """An Image whose `data` length field claims ~2 GB (the last sequence before the pixels)."""
    b = bytearray(raw)
    n = struct.unpack_from("<I", b, len(b) - SPEC.height * SPEC.width * 3 - 4)[0]
    assert n == SPEC.height * SPEC.width * 3
    struct.pack_into("<I", b, len(b) - n - 4, 0x7FFFFFF0)
    return bytes(b)


def huge_joint_state(m: BagMessage, reader: BagReader) -> bytes:
    msg = reader.decode(m)
    positions = np.asarray(msg.position, dtype=np.float64).copy()
    positions[0] = 1e308  # finite in float64, inf in float32
    return bytes(TYPES.serialize_cdr(joint_state_payload(msg.name, positions, m.log_ns), "sensor_msgs/msg/JointState"))


@pytest.fixture(scope="module")
def corrupt_bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic demo bag with one undecodable message on each input topic, and 0.6 s of joint
    states whose first position is 1e308 (valid CDR)."""
    d = tmp_path_factory.mktemp("corrupt")
    good = write_synthetic_bag(SPEC, d / "good")
    with BagReader(good) as reader:
        a_joint_state = next(reader.messages([JOINTS])).raw

        def mutate(m: BagMessage, i: int) -> bytes:
            if m.topic == CAM_HIGH and i == 3:
                return a_joint_state  # JointState bytes on an Image topic
            if m.topic == CAM_LEFT and i == 5:
                return lying_sequence_length(m.raw)
            if m.topic == JOINTS and i == 20:
                return m.raw[:len(m.raw) // 2]  # truncated
            if m.topic == INSTRUCTION:
                b = bytearray(m.raw)
                struct.pack_into("<I", b, 4, 0xFFFFFF00)  # the string's length field
                return bytes(b)
            if m.topic == JOINTS and HUGE_FROM <= i < HUGE_TO:
                return huge_joint_state(m, reader)
            return m.raw
        return rewrite(good, d / "corrupt", mutate)


EXPECTED = {CAM_HIGH: 1, CAM_LEFT: 1, JOINTS: 1, INSTRUCTION: 1}


def undecodable_warnings(caplog: pytest.LogCaptureFixture) -> dict[str, int]:
    out: dict[str, int] = {}
    for rec in caplog.records:
        msg = rec.getMessage()
        if rec.levelno == logging.WARNING and "does not decode" in msg:
            topic = msg.split(":", 1)[0]
            out[topic] = out.get(topic, 0) + 1
    return out


def test_offline_replay_counts_and_skips_undecodable_messages(corrupt_bag: Path, tiny_bundle: Path, tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    result = run_replay(ReplayOptions(bag=corrupt_bag, profile="demo", bundle=str(tiny_bundle), out=tmp_path / "out",
                                      plot=False))
    report = result.report
    assert report["undecodable"] == EXPECTED
    assert undecodable_warnings(caplog) == {t: 1 for t in EXPECTED}  # one line per topic, not per message
    assert f"undecodable messages skipped, per topic: {dict(sorted(EXPECTED.items()))}" in summary_lines(result)
    delivered = report["frame_sets"]["delivered_messages"]
    assert delivered[CAM_HIGH] == delivered[SPEC.camera_topic("cam_right_wrist")] - 1
    assert INSTRUCTION not in delivered  # the only instruction did not decode: instruction.default acts
    # the reference track skips the undecodable joint state and takes 1e308 for "not recorded"
    assert len(result.chunks) >= 2 and 0 <= report["open_loop_error"]["mae"] < 10, report["open_loop_error"]
    # a joint state beyond float32 is stale state (docs/safety.md, invariant 1): the ticks while only
    # such states arrive hold, and nothing non-finite is commanded
    t0 = SPEC.start_ns + HUGE_FROM * 10_000_000 + 20_000_000  # from the tick after the first one
    t1 = SPEC.start_ns + HUGE_TO * 10_000_000
    inside = [tk for tk in result.ticks if t0 < tk.t_ns < t1]
    assert inside and all(tk.hold is not None and tk.hold.value == "stale_state" for tk in inside), \
        [(tk.t_ns, tk.hold) for tk in inside]
    assert all(np.isfinite(np.asarray(tk.last_commanded, dtype=np.float64)).all()
               for tk in result.ticks if tk.last_commanded is not None)


def test_live_replay_publishes_no_undecodable_message(corrupt_bag: Path, tiny_bundle: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    rate = paced_rate(tiny_bundle, DEMO_CHUNK)
    result = run_replay(ReplayOptions(bag=corrupt_bag, profile="demo", bundle=str(tiny_bundle), out=tmp_path / "out",
                                      mode="live", rate=rate, plot=False))
    report = result.report
    assert report["undecodable"] == EXPECTED
    info = read_bag_info(corrupt_bag)
    published = report["delivery"]["messages_published"]
    assert {t: info.topics[t].count - published.get(t, 0) for t in EXPECTED} == EXPECTED
    log = Path(report["node"]["log"]).read_text()
    assert "deserialize" not in log.lower(), log[-2000:]
    assert report["frame_sets"]["used"] >= 1


# --- broken bags: one BagError naming the bag, exit 2 ------------------------------------------

def custom_type_bag(path: Path, msgdef: str, storage: StoragePlugin = StoragePlugin.MCAP) -> Path:
    """A bag with one topic of a custom type whose stored definition is ``msgdef``."""
    writer = Writer(path, version=9, storage_plugin=storage)
    writer.open()
    conn = writer.add_connection("/weird", "my_pkg/msg/Weird", msgdef=msgdef, rihs01="RIHS01_" + "0" * 64)
    writer.write(conn, 1, b"\x00\x01\x00\x00\x00\x00\x00\x00")
    writer.close()
    return path


def with_metadata(src: Path, dst: Path, edit: Callable[[bytes], bytes]) -> Path:
    shutil.copytree(src, dst)
    meta = dst / "metadata.yaml"
    meta.write_bytes(edit(meta.read_bytes()))
    return dst


def truncated(src: Path, dst: Path, keep: float) -> Path:
    shutil.copytree(src, dst)
    data = next(p for p in dst.iterdir() if p.suffix in (".mcap", ".db3"))
    with open(data, "r+b") as f:
        f.truncate(int(data.stat().st_size * keep))
    return dst


def _alias_bomb(meta: bytes) -> bytes:
    lines = ["  bomb0: &b0 {x: 1, y: 1}"] + [
        f"  bomb{i}: &b{i} {{" + ", ".join(f"k{j}: *b{i - 1}" for j in range(9)) + "}" for i in range(1, 12)]
    return meta.replace(b"rosbag2_bagfile_information:\n",
                        b"rosbag2_bagfile_information:\n" + "\n".join(lines).encode() + b"\n", 1)


BROKEN: dict[str, tuple[Callable[[Path, Path], Path], str]] = {  # case -> (make(good bag, dst), expected text)
    "garbage_definition": (lambda good, dst: custom_type_bag(dst, "@@@ not a message definition {{{"),
                           "my_pkg/msg/Weird"),
    "garbage_definition_sqlite3": (lambda good, dst: custom_type_bag(dst, "uint8[[[ x", StoragePlugin.SQLITE3),
                                   "my_pkg/msg/Weird"),
    "oversized_definition": (lambda good, dst: custom_type_bag(dst, "\n".join(f"int32 f{i}" for i in range(12000))),
                             "my_pkg/msg/Weird"),
    "metadata_not_utf8": (lambda good, dst: with_metadata(good, dst, lambda b: b.replace(b"mcap", b"mc\xffp", 1)),
                          "metadata.yaml"),
    "metadata_deep": (lambda good, dst: with_metadata(
        good, dst, lambda b: b + b"  deep: " + b"[" * 3000 + b"]" * 3000 + b"\n"), "metadata.yaml"),
    "metadata_alias_bomb": (lambda good, dst: with_metadata(good, dst, _alias_bomb), "metadata.yaml"),
    "metadata_topic_name_a_list": (lambda good, dst: with_metadata(
        good.parent / "good_sqlite3", dst, lambda b: b.replace(b"name: /demo/joint_states", b"name: [a, b]", 1)),
        "not a string"),
    "metadata_type_a_mapping": (lambda good, dst: with_metadata(
        good.parent / "good_sqlite3", dst, lambda b: b.replace(b"type: std_msgs/msg/String", b"type: {a: 1}", 1)),
        "not a string"),
    "metadata_version_nan": (lambda good, dst: with_metadata(
        good, dst, lambda b: b.replace(b"  version: 9", b"  version: .nan", 1)), "metadata"),
    "sqlite3_truncated": (lambda good, dst: truncated(good.parent / "good_sqlite3", dst, 0.99), "damaged"),
    "mcap_truncated": (lambda good, dst: truncated(good, dst, 0.9), "cannot open"),
}


@pytest.fixture(scope="module")
def good_bags(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("good")
    write_synthetic_bag(replace(SPEC, storage="sqlite3"), d / "good_sqlite3")
    return write_synthetic_bag(SPEC, d / "good")


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_bag_is_one_bag_error_naming_it(good_bags: Path, tmp_path: Path, case: str) -> None:
    make, fragment = BROKEN[case]
    bag = make(good_bags, tmp_path / case)
    with pytest.raises(BagError) as err:
        with BagReader(bag) as reader:
            for _ in reader.messages():
                pass
    text = str(err.value)
    assert str(bag) in text and fragment in text and "\n" not in text, text


@pytest.mark.parametrize("case", ["garbage_definition", "metadata_not_utf8", "metadata_deep", "sqlite3_truncated"])
def test_lightwam_replay_exits_2_naming_the_bag(good_bags: Path, tiny_bundle: Path, tmp_path: Path, case: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    make, fragment = BROKEN[case]
    bag = make(good_bags, tmp_path / case)
    rc = cli_main(["replay", "--bag", str(bag), "--profile", "demo", "--bundle", str(tiny_bundle),
                   "--out", str(tmp_path / "out"), "--no-plot"])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("lightwam replay: error:")]
    assert rc == 2
    assert len(errors) == 1 and str(bag) in errors[0] and fragment in errors[0], errors


def test_decoding_a_self_referencing_custom_type_is_a_bag_error(tmp_path: Path) -> None:
    bag = custom_type_bag(tmp_path / "bag", "my_pkg/Weird child")
    with BagReader(bag) as reader:
        msg = next(reader.messages())
        with pytest.raises(BagError, match="/weird"):
            reader.decode(msg)
