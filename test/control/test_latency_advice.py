"""latency_advice: whether an inference latency fits the chunk, and the text the node, its diagnostics
and the demo print about it (pure functions, no ROS, no model)."""

from __future__ import annotations

import math

import pytest

from lightwam_ros.control.diagnostics import Diagnostics, DiagnosticsInput, Level
from lightwam_ros.control.latency_advice import ChunkTiming, Verdict, advise, remedies, startup_advice
from lightwam_ros.control.scheduler import ChunkScheduler
from lightwam_ros.control.sync import SyncStats

MS = 1_000_000
CHUNK = ChunkTiming(steps=24, dt_ns=20 * MS)  # the demo: 24 steps at 50 Hz, one request at a time


def test_chunk_timing_numbers() -> None:
    assert CHUNK.span_ns == 480 * MS and CHUNK.usable_ns == 460 * MS
    assert CHUNK.gapless_budget_ns == 230 * MS  # 2 L <= 460 ms
    assert ChunkTiming(24, 20 * MS, max_inflight=2).gapless_budget_ns == 2 * 460 * MS // 3
    assert ChunkTiming(24, 20 * MS, frame_age_ns=40 * MS).gapless_budget_ns == 210 * MS
    with pytest.raises(ValueError):
        ChunkTiming(0, 20 * MS)


@pytest.mark.parametrize("latency_ms", [1, 100, 229, 230, 231, 300, 459, 460, 461, 515, 5000])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_the_verdict_agrees_with_the_scheduler(latency_ms: float, k: int) -> None:
    timing = ChunkTiming(24, 20 * MS, max_inflight=k, frame_age_ns=10 * MS)
    a = advise(latency_ms, timing)
    keeps_up = ChunkScheduler.keeps_up(latency_ms * MS, 24, 20 * MS, 10 * MS, k)
    assert (a.verdict is Verdict.OK) == keeps_up
    assert a.too_slow == (not keeps_up)
    assert (a.verdict is Verdict.EXPIRE) == (latency_ms * MS + 10 * MS > 460 * MS)
    assert 0.0 <= a.following <= 1.0
    assert (a.following == 1.0) == keeps_up or a.following == pytest.approx(1.0)


def test_the_issue_case_every_chunk_expires_and_the_message_says_what_to_change() -> None:
    a = advise(515, CHUNK, backend="torch", device="cpu")
    assert a.verdict is Verdict.EXPIRE and a.following == 0.0
    assert a.message.startswith("inference 515 ms > 460 ms usable in a 24-step chunk (480 ms at 50 Hz): "
                                "every chunk will expire")
    assert "too slow" in a.message  # the word operators and existing checks look for
    assert "backend: onnx" in a.message and "a GPU" in a.message
    assert a.remedies[0].startswith("backend: onnx")


def test_gaps_give_the_expected_following_fraction() -> None:
    a = advise(300, CHUNK)
    assert a.verdict is Verdict.GAPS
    # each chunk arrives 300 ms after its observation and lasts to 460 ms: 160 ms of every 300 ms
    assert a.following == pytest.approx(160 / 300)
    assert "about 53 % of control ticks" in a.message and "needs <= 230 ms" in a.message
    # two requests in flight: a chunk every 150 ms, each covering 160 ms -> gapless
    assert advise(300, ChunkTiming(24, 20 * MS, max_inflight=2)).verdict is Verdict.OK


def test_fitting_latency_is_reported_as_such() -> None:
    a = advise(34, CHUNK, backend="onnx")
    assert a.verdict is Verdict.OK and not a.too_slow and a.remedies == ()
    assert a.message == "inference 34 ms fits a 24-step chunk (480 ms at 50 Hz) with 1 request in flight " \
                        "(gapless up to 230 ms)"


def test_remedies_depend_on_backend_device_and_chunk() -> None:
    assert not any("onnx" in r for r in remedies("onnx", "cpu"))
    gpu = remedies("torch", "cuda:0", ChunkTiming(24, 20 * MS))
    assert not any("onnx" in r or "a GPU" in r for r in gpu) and any("max_inflight: 2" in r for r in gpu)
    assert not any("max_inflight" in r for r in remedies("torch", "cuda", ChunkTiming(24, 20 * MS, 2)))
    short = remedies("onnx", "cpu", ChunkTiming(12, 20 * MS), trained_steps=24)
    assert any("chunk.execute_steps: 0" in r and "24 trained steps" in r for r in short)
    assert not any("execute_steps" in r for r in remedies("onnx", "cpu", ChunkTiming(24, 20 * MS), 24))


def test_control_rate_does_not_enter() -> None:
    """A chunk lasts steps x the bundle's action period; the control timer's rate cannot change that."""
    a = advise(300, ChunkTiming(24, 20 * MS))
    assert "control_rate" not in a.message


def test_startup_advice_skips_a_missing_warm_up() -> None:
    assert startup_advice(math.nan, 24, 20 * MS, 1, "torch", "cpu") is None
    assert startup_advice(0.0, 24, 20 * MS, 1, "torch", "cpu") is None
    a = startup_advice(515.0, 24, 20 * MS, 1, "torch", "cpu", 24)
    assert a is not None and a.verdict is Verdict.EXPIRE


def _diag_input(**kw) -> DiagnosticsInput:
    sync = SyncStats(0, 0, {}, {}, {}, 0, None, None)
    base = dict(sync=sync, dead_cameras=(), silence_ns={}, hold=None, queue_steps=0, safety={},
                backend="torch", device="cpu", dtype="float32")
    return DiagnosticsInput(**(base | kw))


def _inference(inp: DiagnosticsInput) -> dict:
    d = Diagnostics("n", ("cam",), 0)
    return next(s for s in d.statuses(10**9, inp) if s["name"] == "n: inference")


def test_diagnostics_inference_status_names_the_numbers_with_the_chunk_geometry() -> None:
    st = _inference(_diag_input(expected_latency_ns=515 * MS, keeps_up=False, chunk_steps=24, dt_ns=20 * MS,
                                max_inflight=1))
    assert st["level"] is Level.WARN
    assert "inference 515 ms > 460 ms usable in a 24-step chunk (480 ms at 50 Hz)" in st["message"]
    assert "backend: onnx" in st["message"]
    ok = _inference(_diag_input(backend="onnx", expected_latency_ns=34 * MS, keeps_up=True, chunk_steps=24,
                                dt_ns=20 * MS, max_inflight=1))
    assert ok["level"] is Level.OK and "fits" not in ok["message"]  # nothing to say when it fits


def test_diagnostics_without_geometry_still_says_too_slow_and_what_to_change() -> None:
    st = _inference(_diag_input(expected_latency_ns=515 * MS, keeps_up=False))
    assert st["level"] is Level.WARN and "too slow" in st["message"] and "backend: onnx" in st["message"]
    assert _inference(_diag_input(expected_latency_ns=34 * MS, keeps_up=True))["level"] is Level.OK
