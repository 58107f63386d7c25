"""DecodeThread: frames decoded off the caller's thread, handed back in order, bounded backlog.

Driven with plain callables (no DDS): a decoder that waits on an event lets the test hold the
thread mid-decode, so the backlog bound is exercised deterministically, without sleeps.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from lightwam_ros.ros.decode_thread import DecodeThread
from lightwam_ros.ros.images import ImageError

TIMEOUT_S = 30.0  # a bound on waiting, not a speed


def _pixels(value: int) -> np.ndarray:
    return np.full((2, 2, 3), value, np.uint8)


def _wait(predicate, what: str) -> None:
    done = threading.Event()
    deadline = threading.Timer(TIMEOUT_S, done.set)
    deadline.start()
    try:
        while not predicate():
            if done.wait(0.005):
                raise AssertionError(f"timed out waiting for {what}")
    finally:
        deadline.cancel()


def test_frames_come_back_in_order_with_their_camera_and_stamp() -> None:
    notified = threading.Semaphore(0)
    threads = set()

    def decode(msg, camera, topic):
        threads.add(threading.current_thread().name)
        return _pixels(msg)

    d = DecodeThread(decode, notified.release, capacity=100)
    try:
        for i in range(20):
            d.submit(i, f"cam{i % 3}", f"/t{i % 3}", 1000 + i)
        got = []
        _wait(lambda: got.extend(d.drain()) or len(got) == 20, "20 frames")
        assert [f.stamp_ns for f in got] == [1000 + i for i in range(20)]
        assert [f.camera for f in got] == [f"cam{i % 3}" for i in range(20)]
        assert all(int(f.rgb[0, 0, 0]) == f.stamp_ns - 1000 for f in got)
        assert threads == {"lightwam-decode"} and threading.current_thread().name not in threads
        assert sum(d.decoded.values()) == 20 and not d.take_dropped()
    finally:
        d.close()


def test_a_bad_frame_comes_back_as_an_error_and_the_thread_keeps_going() -> None:
    def decode(msg, camera, topic):
        if msg == "bad":
            raise ImageError(f"compressed image on '{topic}': corrupt")
        if msg == "bug":
            raise ZeroDivisionError("decoder bug")
        return _pixels(1)

    d = DecodeThread(decode, lambda: None)
    try:
        for i, m in enumerate(["ok", "bad", "bug", "ok"]):
            d.submit(m, "cam", "/t", i)
        got = []
        _wait(lambda: got.extend(d.drain()) or len(got) == 4, "4 results")
        assert [f.error is None for f in got] == [True, False, False, True]
        assert "/t" in str(got[1].error) and "ZeroDivisionError" in str(got[2].error)
        assert got[1].rgb is None and d.failed["cam"] == 2 and d.decoded["cam"] == 2
    finally:
        d.close()


def test_the_backlog_is_bounded_and_drops_the_oldest_undecoded_frames() -> None:
    release = threading.Event()
    started = threading.Event()

    def decode(msg, camera, topic):
        started.set()
        if not release.wait(TIMEOUT_S):
            raise AssertionError("never released")
        return _pixels(msg)

    d = DecodeThread(decode, lambda: None, capacity=3)
    try:
        d.submit(0, "a", "/a", 0)
        assert started.wait(TIMEOUT_S)  # frame 0 is being decoded: 1..8 queue behind it
        for i in range(1, 9):
            d.submit(i, "a" if i % 2 else "b", "/x", i)
        assert d.backlog == 3
        release.set()
        got = []
        _wait(lambda: got.extend(d.drain()) or len(got) == 4, "the decoded frames")
        assert [f.stamp_ns for f in got] == [0, 6, 7, 8]  # the newest three after the one in progress
        dropped = d.take_dropped()
        assert dropped == {"a": 3, "b": 2} and not d.take_dropped()
    finally:
        d.close()


def test_close_stops_the_thread_and_later_submits_are_ignored() -> None:
    d = DecodeThread(lambda m, c, t: _pixels(0), lambda: None)
    d.close()
    d.submit(1, "a", "/a", 1)
    assert d.backlog == 0 and d.drain() == []


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError):
        DecodeThread(lambda m, c, t: _pixels(0), lambda: None, capacity=0)
