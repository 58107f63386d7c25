"""Bag I/O: both storage plugins, metadata versions 8 and 9, record-time order, topic discovery."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from lightwam_ros.demo.synthetic import SyntheticBagSpec, TimedInstruction, write_synthetic_bag
from lightwam_ros.replay.bags import (
    BagError,
    BagReader,
    BagWriter,
    find_topic,
    joint_state_payload,
    read_bag_info,
    resolve_name,
    string_payload,
    transient_local_qos,
)


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
@pytest.mark.parametrize("version", [8, 9])
def test_synthetic_bag_round_trip(tmp_path, storage, version):
    spec = SyntheticBagSpec(height=40, width=48, seconds=0.5, rate_hz=10.0, storage=storage, version=version,
                            instructions=(TimedInstruction("pick up the cup"),))
    write_synthetic_bag(spec, tmp_path / "bag")
    meta = yaml.safe_load((tmp_path / "bag" / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert meta["version"] == version and meta["storage_identifier"] == storage
    info = read_bag_info(tmp_path / "bag")
    assert (info.storage, info.version) == (storage, version)
    assert info.topics["/demo/cam_high/image_raw"].count == 5
    assert info.topics["/demo/joint_states"].count == 50
    assert info.topics["/demo/instruction"].transient_local  # QoS survives both metadata formats
    assert not info.topics["/demo/joint_states"].transient_local
    assert info.start_ns == spec.start_ns and info.message_count == 3 * 5 + 50 + 1
    with BagReader(tmp_path / "bag") as r:
        times = [m.log_ns for m in r.messages()]
        assert times == sorted(times)
        js = [r.decode(m) for m in r.messages(["/demo/joint_states"], start_ns=spec.start_ns + 100_000_000,
                                               stop_ns=spec.start_ns + 200_000_000)]
    assert len(js) == 10 and js[0].header.stamp.nanosec == 100_000_000


def test_writer_interleaved_topics_come_back_in_record_order(tmp_path):
    with BagWriter(tmp_path / "b", storage="mcap", version=9) as w:
        w.add_topic("/a", "sensor_msgs/msg/JointState")
        w.add_topic("/s", "std_msgs/msg/String", qos=[transient_local_qos()])
        # written out of order on purpose: readers must return record-time order
        for t in (30, 10, 20):
            w.write_message("/a", t, joint_state_payload(["j"], np.array([t / 10]), t))
        w.write_message("/s", 15, string_payload("hi"))
    with BagReader(tmp_path / "b") as r:
        got = [(m.topic, m.log_ns) for m in r.messages()]
        assert got == [("/a", 10), ("/s", 15), ("/a", 20), ("/a", 30)]
        assert r.decode(next(r.messages(["/s"]))).data == "hi"


def test_writer_refuses_existing_dir_and_unknown_type(tmp_path):
    (tmp_path / "exists").mkdir()
    with pytest.raises(BagError, match="already exists"):
        BagWriter(tmp_path / "exists")
    with BagWriter(tmp_path / "b") as w, pytest.raises(BagError, match="my_msgs/msg/Thing"):
        w.add_topic("/x", "my_msgs/msg/Thing")


def test_reader_errors_name_the_bag_and_topic(tmp_path):
    with pytest.raises(BagError, match="does not exist"):
        BagReader(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BagError, match="metadata.yaml"):
        BagReader(tmp_path / "empty")
    write_synthetic_bag(SyntheticBagSpec(height=32, width=32, seconds=0.2, rate_hz=10.0), tmp_path / "bag")
    with BagReader(tmp_path / "bag") as r, pytest.raises(BagError, match="/demo/depth"):
        list(r.messages(["/demo/depth"]))


def test_name_resolution_and_topic_discovery(tmp_path):
    assert resolve_name("joint_states", "/") == "/joint_states"
    assert resolve_name("joint_states", "/demo") == "/demo/joint_states"
    assert resolve_name("/abs/x", "/demo") == "/abs/x"
    assert resolve_name("~/action_chunk", "/demo") == "/demo/lightwam_policy/action_chunk"
    write_synthetic_bag(SyntheticBagSpec(height=32, width=32, seconds=0.2, rate_hz=10.0), tmp_path / "bag")
    info = read_bag_info(tmp_path / "bag")
    image = "sensor_msgs/msg/Image"
    assert find_topic(info, "cam_high/image_raw", image, namespace="/demo") == "/demo/cam_high/image_raw"
    # profile recorded under another namespace: unique suffix match of the right type
    assert find_topic(info, "cam_high/image_raw", image) == "/demo/cam_high/image_raw"
    assert find_topic(info, "joint_states", "sensor_msgs/msg/JointState") == "/demo/joint_states"
    with pytest.raises(BagError, match="cameras.topics 'cam_top/image_raw'.*cam_high"):
        find_topic(info, "cam_top/image_raw", image, what="cameras.topics")
    with pytest.raises(BagError, match="has type sensor_msgs/msg/Image"):
        find_topic(info, "/demo/cam_high/image_raw", "std_msgs/msg/String")
