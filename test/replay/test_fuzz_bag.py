"""Fuzz tests of bag reading and of replay's decode path, from valid bags by mutation (fixed seeds).

- metadata.yaml and storage mutants (truncated, flipped bytes, values retyped or nested deeply,
  aliases and alias bombs, lines re-indented; the .mcap / .db3 file truncated or overwritten in
  places): BagReader opens the bag and reads every message -- decoding each, where a message that
  does not decode is a BagError of its own -- or raises one BagError naming the bag.
- CDR payload mutants of valid JointState, Image, CompressedImage and String messages (truncated,
  flipped bytes, a length field set to a lie, bytes appended, bytes of another type), written with
  BagWriter.write_raw: the replay's decoder (rclpy) returns a message or None (counted), the bag
  reader's decoder a message or a BagError; never another exception.
- An offline replay of the demo bag with mutants among its inputs runs to the end and reports
  exactly the messages rclpy does not decode as ``undecodable``; what decodes goes to the node's
  bridge, whose own checks (images.py, joint_input.py) refuse what is wrong in it.

The first two run in a child process whose memory is capped above what it uses after its imports
(test/support/bounded_child.py): a lying length that made something allocate what it says would be
a reported MemoryError, not a machine out of memory. LIGHTWAM_FUZZ_ITERATIONS sets the number of
mutants of each (default 150); LIGHTWAM_FUZZ_SEED the seed (default 15).
"""

from __future__ import annotations

import os
import random
import textwrap
from pathlib import Path

import numpy as np
from bounded_child import run_bounded  # test/support

from lightwam_ros.demo.synthetic import DEFAULT_INSTRUCTION, SyntheticBagSpec, TimedInstruction, write_synthetic_bag
from lightwam_ros.replay.bags import BagReader, BagWriter, transient_local_qos
from lightwam_ros.replay.options import ReplayOptions
from lightwam_ros.replay.runner import run_replay

ITERATIONS = int(os.environ.get("LIGHTWAM_FUZZ_ITERATIONS", "150"))
SEED = int(os.environ.get("LIGHTWAM_FUZZ_SEED", "15"))
PER_CASE_BOUND_S = 10.0  # a bound on work, not a speed: each case takes milliseconds

# Shared by the children: how a byte string is mutated (seeded by the caller's rng).
_MUTATE = r'''
import re, struct

VALUES = [b"[1, [2, [3]]]", b"{a: 1, b: {c: 2}}", b'"text"', b"-1", b"1.0", b"true", b"null", b".nan", b"1e400",
          b"2001-13-45", b'!!binary "AAAA"', b"0x", b"9" * 5000, b"[]", b"{}", b"*nowhere", b"&s [*s]", b"abc"]

def value_lines(b):
    return [m for m in re.finditer(rb"^( *[A-Za-z_][\w.]*:)[ \t]*([^\n#]+)", b, re.M) if m.group(2).strip()]

def yaml_mutant(rng, b):
    for _ in range(rng.randint(1, 3)):
        kind = rng.randrange(6)
        lines = value_lines(b)
        if kind == 0:
            b = b[:rng.randrange(len(b) + 1)]
        elif kind == 1:
            b = bytearray(b)
            for _ in range(rng.randint(1, 8)):
                if b:
                    b[rng.randrange(len(b))] = rng.randrange(256)
            b = bytes(b)
        elif kind == 2 and lines:
            m = rng.choice(lines)
            b = b[:m.start(2)] + rng.choice(VALUES) + b[m.end(2):]
        elif kind == 3 and lines:
            m, depth = rng.choice(lines), rng.choice([2, 31, 33, 3000])
            b = b[:m.start(2)] + b"[" * depth + m.group(2) + b"]" * depth + b[m.end(2):]
        elif kind == 4:
            levels, fanout = rng.choice([(12, 9), (20, 3), (5, 5)])
            bomb = [b"  bomb0: &b0 {x: 1, y: 1}"] + [
                b"  bomb%d: &b%d {" % (i, i) + b", ".join(b"k%d: *b%d" % (j, i - 1) for j in range(fanout)) + b"}"
                for i in range(1, levels)]
            b = b.replace(b":\n", b":\n" + b"\n".join(bomb) + b"\n", 1)
        elif kind == 5:
            ls = b.split(b"\n")
            i = rng.randrange(len(ls))
            ls[i] = b" " * rng.choice([0, 1, 3, 40]) + ls[i].lstrip()
            b = b"\n".join(ls)
    return b

def cdr_mutant(rng, raw, others):
    kind = rng.randrange(6)
    b = bytearray(raw)
    if kind == 0:
        return bytes(b[:rng.randrange(len(b))])
    if kind == 1:
        for _ in range(rng.randint(1, 6)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        return bytes(b)
    if kind == 2:  # a length field that lies (every 4-aligned word of the payload may be one)
        i = 4 + 4 * rng.randrange(max(1, (len(b) - 8) // 4))
        struct.pack_into("<I", b, i, rng.choice([0, 1, 3, 0x7FFFFFFF, 0xFFFFFFFF, rng.randrange(1 << 32), len(b)]))
        return bytes(b)
    if kind == 3:
        return bytes(b) + bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    if kind == 4:
        return rng.choice(others)  # bytes of another type
    b[1] = rng.choice([0, 2, 3, 0x10, 0xFF])  # encapsulation kind
    return bytes(b)
'''


_METADATA_FUZZ = textwrap.dedent(r'''
    import random, shutil, sys, tempfile, time
    from pathlib import Path
    from bounded_child import cap_memory, report
    from lightwam_ros.demo.synthetic import DEFAULT_INSTRUCTION, SyntheticBagSpec, TimedInstruction, write_synthetic_bag
    from lightwam_ros.replay.bags import BagError, BagReader
    exec(sys.argv[3])  # the mutators

    iterations, seed = int(sys.argv[1]), int(sys.argv[2])
    tmp = Path(tempfile.mkdtemp())
    seeds = [write_synthetic_bag(SyntheticBagSpec(height=16, width=16, rate_hz=10.0, seconds=0.3, storage=storage,
                                                  instructions=(TimedInstruction(DEFAULT_INSTRUCTION),)),
                                 tmp / f"seed_{storage}") for storage in ("mcap", "sqlite3")]
    cap_memory(1024)
    rng = random.Random(seed)
    outcomes, slowest = {}, 0.0
    for i in range(iterations):
        src = rng.choice(seeds)
        bag = tmp / f"mutant_{i}"
        shutil.copytree(src, bag)
        meta = bag / "metadata.yaml"
        if rng.random() < 0.8:
            meta.write_bytes(yaml_mutant(rng, meta.read_bytes()))
            what = "metadata.yaml: " + meta.read_bytes()[:300].decode("utf-8", "replace")
        else:  # the storage file
            data = next(p for p in bag.iterdir() if p.suffix in (".mcap", ".db3"))
            b = bytearray(data.read_bytes())
            if rng.random() < 0.5:
                b = b[:rng.randrange(len(b))]
            else:
                at = rng.randrange(len(b))
                b[at:at + 64] = bytes(rng.randrange(256) for _ in range(64))
            data.write_bytes(bytes(b))
            what = f"{data.name} of {src.name}: {len(b)} bytes left"
        t0 = time.monotonic()
        try:
            with BagReader(bag) as reader:
                for m in reader.messages():
                    try:
                        reader.decode(m)
                    except BagError as exc:
                        assert m.topic in str(exc), str(exc)
            outcome, message = "read", ""
        except BagError as exc:
            outcome, message = "BagError", str(exc)
        except BaseException as exc:  # what the test is looking for
            outcome, message = type(exc).__name__, str(exc)[:300]
        slowest = max(slowest, time.monotonic() - t0)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        if not (outcome == "read" or (outcome == "BagError" and str(bag) in message and "\n" not in message)):
            report(bad=i, seed=seed, outcome=outcome, message=message, mutant=what)
        shutil.rmtree(bag)
    report(outcomes=outcomes, slowest_s=slowest)
''')


def test_metadata_and_storage_mutants_read_or_raise_one_bag_error() -> None:
    results = run_bounded(_METADATA_FUZZ, [str(ITERATIONS), str(SEED), _MUTATE],
                          timeout_s=120 + ITERATIONS * PER_CASE_BOUND_S / 10)
    summary = results[-1]
    assert not [r for r in results if "bad" in r], [r for r in results if "bad" in r][:5]
    assert sum(summary["outcomes"].values()) == ITERATIONS
    assert summary["outcomes"].get("BagError", 0) > 0 and summary["outcomes"].get("read", 0) > 0, summary
    assert summary["slowest_s"] < PER_CASE_BOUND_S, summary


_CDR_FUZZ = textwrap.dedent(r'''
    import random, sys, tempfile, time
    from pathlib import Path
    import numpy as np
    from bounded_child import cap_memory, report
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import CompressedImage, Image, JointState
    from std_msgs.msg import String
    from lightwam_ros.replay.bags import (BagError, BagReader, BagWriter, compressed_image_payload, image_payload,
                                          joint_state_payload, string_payload)
    from lightwam_ros.replay.undecodable import InputDecoder
    exec(sys.argv[3])  # the mutators

    iterations, seed = int(sys.argv[1]), int(sys.argv[2])
    TYPES = {"sensor_msgs/msg/JointState": JointState, "sensor_msgs/msg/Image": Image,
             "sensor_msgs/msg/CompressedImage": CompressedImage, "std_msgs/msg/String": String}
    payloads = {
        "sensor_msgs/msg/JointState": joint_state_payload(["a", "bb", "ccc"], np.array([0.1, -0.2, 0.3]), 5,
                                                          np.array([1.0, 2.0, 3.0])),
        "sensor_msgs/msg/Image": image_payload(np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3), "rgb8", 18, 5,
                                               "cam"),
        "sensor_msgs/msg/CompressedImage": compressed_image_payload(b"\xff\xd8\xff\xe0" + bytes(40), "jpeg", 5),
        "std_msgs/msg/String": string_payload("pick up the red block"),
    }
    tmp = Path(tempfile.mkdtemp())
    with BagWriter(tmp / "seeds") as w:
        seeds = {t: bytes(w.typestore.serialize_cdr(p, t)) for t, p in payloads.items()}
    cap_memory(1024)
    rng = random.Random(seed)
    topics = {t: "/" + t.replace("/", "_") for t in TYPES}
    written = []
    with BagWriter(tmp / "mutants") as w:
        for t, topic in topics.items():
            w.add_topic(topic, t)
        for i in range(iterations):
            t = rng.choice(list(TYPES))
            raw = cdr_mutant(rng, seeds[t], [s for k, s in seeds.items() if k != t])
            w.write_raw(topics[t], 1000 + i, raw)
            written.append(t)
    decoder = InputDecoder(TYPES)
    outcomes, slowest, refused = {}, 0.0, 0
    with BagReader(tmp / "mutants") as reader:
        for i, m in enumerate(reader.messages()):
            t0 = time.monotonic()
            for name, decode in (("rclpy", lambda: decoder.decode(m, m.msgtype)), ("bag", lambda: reader.decode(m))):
                try:
                    got = decode()
                    outcome = "decoded" if got is not None else "skipped"
                except BagError as exc:
                    outcome = "BagError" if name == "bag" and m.topic in str(exc) else "bad BagError: " + str(exc)
                except BaseException as exc:  # what the test is looking for
                    outcome = f"{type(exc).__name__}: {str(exc)[:200]}"
                key = f"{name} {outcome}"
                outcomes[key] = outcomes.get(key, 0) + 1
                if outcome not in ("decoded", "skipped", "BagError"):
                    report(bad=i, seed=seed, decoder=name, outcome=outcome, msgtype=m.msgtype, raw=m.raw[:200].hex())
            # independently: does rclpy refuse it?
            try:
                deserialize_message(m.raw, TYPES[m.msgtype])
            except Exception:
                refused += 1
            slowest = max(slowest, time.monotonic() - t0)
    report(outcomes=outcomes, slowest_s=slowest, messages=i + 1, refused=refused,
           counted=sum(decoder.undecodable.values()))
''')


def test_cdr_mutants_decode_or_are_counted_and_skipped() -> None:
    results = run_bounded(_CDR_FUZZ, [str(ITERATIONS * 4), str(SEED), _MUTATE],
                          timeout_s=120 + ITERATIONS * PER_CASE_BOUND_S / 10)
    summary = results[-1]
    assert not [r for r in results if "bad" in r], [r for r in results if "bad" in r][:5]
    assert summary["messages"] == ITERATIONS * 4
    assert summary["counted"] == summary["refused"] > 0, summary
    assert summary["outcomes"].get("rclpy decoded", 0) > 0 and summary["outcomes"].get("bag BagError", 0) > 0, summary
    assert summary["slowest_s"] < PER_CASE_BOUND_S, summary


def test_offline_replay_of_mutated_inputs_runs_and_counts_what_does_not_decode(tiny_bundle: Path,
                                                                             tmp_path: Path) -> None:
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import String

    namespace: dict = {}
    exec(_MUTATE, namespace)
    cdr_mutant = namespace["cdr_mutant"]
    spec = SyntheticBagSpec(height=48, width=64, rate_hz=10.0, seconds=1.0, jitter_ms=0.0,
                            instructions=(TimedInstruction(DEFAULT_INSTRUCTION),))
    good = write_synthetic_bag(spec, tmp_path / "good")
    classes = {"sensor_msgs/msg/Image": Image, "sensor_msgs/msg/JointState": JointState, "std_msgs/msg/String": String}
    rng = random.Random(SEED)
    expected: dict[str, int] = {}
    with BagReader(good) as r, BagWriter(tmp_path / "mutated") as w:
        samples = {t.msgtype: next(r.messages([t.name])).raw for t in r.info.topics.values()}
        for t in r.info.topics.values():
            w.add_topic(t.name, t.msgtype, qos=[transient_local_qos()] if t.transient_local else ())
        for m in r.messages():
            raw = m.raw
            if m.topic != spec.instruction_topic and rng.random() < 0.25:  # keep the instruction: the node acts
                raw = cdr_mutant(rng, m.raw, [s for k, s in samples.items() if k != m.msgtype])
                try:
                    deserialize_message(raw, classes[m.msgtype])
                except Exception:  # noqa: BLE001 - the replay must count exactly these
                    expected[m.topic] = expected.get(m.topic, 0) + 1
            w.write_raw(m.topic, m.log_ns, raw)
    assert sum(expected.values()) > 5
    result = run_replay(ReplayOptions(bag=tmp_path / "mutated", profile="demo", bundle=str(tiny_bundle),
                                      out=tmp_path / "out", plot=False))
    assert result.report["undecodable"] == dict(sorted(expected.items()))
    assert all(np.isfinite(np.asarray(tk.last_commanded, dtype=np.float64)).all()
               for tk in result.ticks if tk.last_commanded is not None)
