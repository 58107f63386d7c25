"""InferencePool (k concurrent requests) and PolicyPipeline.predict from several threads.

The pool tests use sleeping predict functions (time.sleep releases the GIL like the model's kernels
do), so the expected wall times are known in advance. The pipeline tests compare concurrent calls
against sequential calls of the same pipeline on the tiny demo bundle: any shared per-call state
(timings, IO buffers, canvases) would mix inputs and change actions.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from lightwam_ros.inference.pipeline import CANVAS_HISTORY
from lightwam_ros.inference.pool import InferencePool, PoolResult
from lightwam_ros.types import ActionChunk

LATENCY_S = 0.4
CAMERAS = ("cam_high", "cam_left_wrist", "cam_right_wrist")
INSTRUCTION = "place the cup on the coaster"


def _chunk(stamp_ns: int) -> ActionChunk:
    return ActionChunk(actions=np.full((4, 2), float(stamp_ns), np.float32), stamp_ns=stamp_ns, dt_ns=20_000_000,
                       trained_steps=4)


def _sleepy(request: tuple[int, float]) -> ActionChunk:
    """request = (stamp, seconds): sleep, then a chunk carrying the stamp; a negative stamp raises."""
    stamp, seconds = request
    time.sleep(seconds)
    if stamp < 0:
        raise ValueError(f"bad request {stamp}")
    return _chunk(stamp)


def _wait_results(pool: InferencePool, n: int, timeout: float = 10.0) -> list[PoolResult]:
    out: list[PoolResult] = []
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        out += pool.poll()
        time.sleep(0.005)
    assert len(out) == n, f"{len(out)} of {n} results within {timeout} s"
    return out


def test_two_workers_overlap_two_slow_requests() -> None:
    with InferencePool(_sleepy, workers=2) as pool:
        assert (pool.workers, pool.free_slots, pool.inflight, pool.busy) == (2, 2, 0, False)
        t0 = time.monotonic()
        assert pool.submit(1, (100, LATENCY_S)) and pool.submit(2, (200, LATENCY_S))
        assert (pool.free_slots, pool.inflight, pool.busy) == (0, 2, True)
        assert not pool.submit(3, (300, 0.0)), "a third request must be refused while both slots run"
        results = _wait_results(pool, 2)
        wall = time.monotonic() - t0
    # Overlapped: about one latency, far from the two a single worker needs.
    assert LATENCY_S <= wall < 1.5 * LATENCY_S, wall
    assert sorted(r.ticket for r in results) == [1, 2]
    for r in results:
        assert r.error is None and r.chunk.stamp_ns == r.request[0] == 100 * r.ticket


def test_one_worker_runs_requests_one_after_another() -> None:
    """The k = 1 pool behaves like the node's former single worker: the second waits for a slot."""
    with InferencePool(_sleepy, workers=1) as pool:
        assert pool.submit(1, (100, 0.2)) and not pool.submit(2, (200, 0.0)) and pool.busy
        (r,) = _wait_results(pool, 1)
        assert r.ticket == 1 and r.frames == (100, 0.2) and not pool.busy  # `frames`: the old result field
        assert pool.submit(2, (200, 0.0))
        assert [r.ticket for r in _wait_results(pool, 1)] == [2]


def test_results_in_finish_order_with_finish_times() -> None:
    with InferencePool(_sleepy, workers=3) as pool:
        t_submit = time.monotonic_ns()
        assert pool.submit(1, (100, 0.45)) and pool.submit(2, (200, 0.05)) and pool.submit(3, (300, 0.25))
        time.sleep(0.7)  # collect late, as the control loop does at its next tick
        t_poll = time.monotonic_ns()
        results = pool.poll()
        assert pool.poll() == [], "each result is returned once"
    assert [r.ticket for r in results] == [2, 3, 1]  # finish order, not submit order
    finished = [r.finished_monotonic_ns for r in results]
    assert finished == sorted(finished) and finished[-1] <= t_poll
    for r, seconds in zip(results, (0.05, 0.25, 0.45)):
        # the finish time, not the (later) collection time: within the sleep + 100 ms of scheduling slack
        assert t_submit + seconds * 1e9 <= r.finished_monotonic_ns < t_submit + (seconds + 0.1) * 1e9
        ticket, request, chunk, error, _ = r  # a plain tuple too
        assert chunk.stamp_ns == request[0] and error is None


def test_exceptions_become_error_results_and_workers_survive() -> None:
    with InferencePool(_sleepy, workers=2) as pool:
        assert pool.submit(7, (-1, 0.0)) and pool.submit(8, (-2, 0.05))
        results = _wait_results(pool, 2)
        assert {r.ticket: r.error for r in results} == {7: "ValueError: bad request -1",
                                                        8: "ValueError: bad request -2"}
        assert all(r.chunk is None for r in results) and pool.free_slots == 2
        # both threads still serve requests
        assert pool.submit(9, (900, 0.2)) and pool.submit(10, (1000, 0.2))
        assert sorted(r.chunk.stamp_ns for r in _wait_results(pool, 2)) == [900, 1000]


def test_no_slot_leak_under_load() -> None:
    rng = np.random.default_rng(0)
    with InferencePool(_sleepy, workers=3) as pool:
        submitted, results = 0, []
        while submitted < 60:
            if pool.submit(submitted, (int(rng.choice([-1, 1])) * (submitted + 1), float(rng.uniform(0, 0.01)))):
                submitted += 1
            results += pool.poll()
        results += _wait_results(pool, 60 - len(results))
        assert (pool.free_slots, pool.inflight, pool.busy) == (3, 0, False)
    assert sorted(r.ticket for r in results) == list(range(60))
    assert all((r.error is None) == (r.request[0] > 0) for r in results)


def test_close_joins_threads_after_running_requests() -> None:
    pool = InferencePool(_sleepy, workers=2, name="test-pool")
    assert pool.submit(1, (100, 0.3))
    time.sleep(0.05)
    t0 = time.monotonic()
    assert pool.close(timeout=5.0) is True
    assert 0.15 < time.monotonic() - t0 < 1.0, "close waits for the running request"
    assert not any(t.name.startswith("test-pool") for t in threading.enumerate())
    assert [r.ticket for r in pool.poll()] == [1], "a request finished during close is still reported"
    assert not pool.submit(2, (200, 0.0)) and pool.busy and pool.free_slots == 0
    with pytest.raises(ValueError, match="workers must be an int >= 1"):
        InferencePool(_sleepy, workers=0)


def test_close_timeout_returns_false_for_a_stuck_request() -> None:
    pool = InferencePool(_sleepy, workers=1)
    assert pool.submit(1, (100, 0.6))
    time.sleep(0.05)
    assert pool.close(timeout=0.1) is False
    assert pool.close(timeout=5.0) is True


def _can_fifo() -> bool:
    import os

    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    except (AttributeError, OSError):
        return False
    os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    return True


@pytest.mark.skipif(not _can_fifo(), reason="this process may not use SCHED_FIFO (not root, no rtprio)")
def test_workers_drop_a_real_time_policy_inherited_from_their_creator() -> None:
    """A pool built on a SCHED_FIFO thread (the node's executor after apply_realtime) computes with
    normal scheduling."""
    import os

    from lightwam_ros.ros.realtime import apply_realtime

    seen: dict[str, object] = {}

    def rt_thread() -> None:
        try:
            assert "SCHED_FIFO" in apply_realtime(3, None)
            with InferencePool(lambda _: os.sched_getscheduler(0), workers=2) as pool:
                assert pool.submit(1, None) and pool.submit(2, None)
                seen["policies"] = [r.chunk for r in _wait_results(pool, 2)]
            seen["creator"] = os.sched_getscheduler(0)
        finally:
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))

    t = threading.Thread(target=rt_thread)
    t.start()
    t.join(10)
    assert seen == {"policies": [os.SCHED_OTHER] * 2, "creator": os.SCHED_FIFO}


# -- PolicyPipeline.predict from several threads ---------------------------------------------------

@pytest.fixture(scope="module")
def onnx_bundle(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tiny demo bundle with its float32 ONNX export."""
    from lightwam_ros.inference.onnx_export import export_onnx

    dst = tmp_path_factory.mktemp("onnx_conc") / "tiny"
    shutil.copytree(tiny_bundle, dst)
    export_onnx(dst, torch.float32, torch.device("cpu"))
    return dst


def _observations(n: int) -> list[tuple[dict[str, np.ndarray], np.ndarray, int]]:
    rng = np.random.default_rng(1)
    return [({c: rng.integers(0, 256, (120 + 8 * i, 160, 3), dtype=np.uint8) for c in CAMERAS},
             rng.normal(0, 0.3, 14), 1_000_000 * (i + 1)) for i in range(n)]


def _concurrent_matches_sequential(pipe, workers: int, calls: int, atol: float | None = None) -> None:
    """Actions within `atol`, by default 1e-5 of their scale (~100 float32 rounding steps).

    Not bit-identical by construction: BLAS/oneDNN/ONNX Runtime split a call's work by the threads they
    get, which may change while another call runs, and with it the fp32 summation order. A request fed
    another request's input is O(0.1) off (checked below); the canvases (uint8, each pixel computed by
    one thread in a fixed order) are compared exactly.
    """
    obs = _observations(calls)
    sequential, canvases = [], {}
    for images, state, stamp in obs:
        sequential.append(pipe.predict(images, state, INSTRUCTION, stamp))
        canvases[stamp] = pipe.canvas_for(stamp)
    expected = {o[2]: s for o, s in zip(obs, sequential)}
    if atol is None:
        atol = 1e-5 * max(float(np.abs(s.actions).max()) for s in sequential)
    for i, a in enumerate(sequential):  # the bound still tells the requests apart
        for b in sequential[i + 1:]:
            assert np.abs(a.actions - b.actions).max() > 100 * atol
    # all requests at once from `workers` raw threads (the most overlap)
    results: dict[int, ActionChunk] = {}
    barrier = threading.Barrier(workers)

    def run(part: list) -> None:
        barrier.wait()
        for images, state, stamp in part:
            results[stamp] = pipe.predict(images, state, INSTRUCTION, stamp)

    threads = [threading.Thread(target=run, args=(obs[i::workers],)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sorted(results) == sorted(expected)
    for stamp, chunk in results.items():
        np.testing.assert_allclose(chunk.actions, expected[stamp].actions, rtol=0, atol=atol, err_msg=f"stamp {stamp}")
        assert chunk.stamp_ns == stamp and set(chunk.timings_ms) >= {"preprocess", "infer", "total"}
    # and through the pool the node uses
    with InferencePool(lambda o: pipe.predict(o[0], o[1], INSTRUCTION, o[2]), workers=workers) as pool:
        done: list[PoolResult] = []
        pending = list(obs)
        while len(done) < len(obs):
            while pending and pool.submit(pending[0][2], pending[0]):
                pending.pop(0)
            done += pool.poll()
            time.sleep(0.001)
    for r in done:
        assert r.error is None, r.error
        np.testing.assert_allclose(r.chunk.actions, expected[r.ticket].actions, rtol=0, atol=atol)
    kept = [stamp for stamp in canvases if pipe.canvas_for(stamp) is not None]
    # (which ones are kept depends on the finish order; each must be that request's own input)
    assert len(kept) == CANVAS_HISTORY
    for stamp in kept:
        np.testing.assert_array_equal(pipe.canvas_for(stamp), canvases[stamp])
    assert any(np.array_equal(pipe.last_canvas, canvases[stamp]) for stamp in kept)


@pytest.mark.numeric
def test_torch_pipeline_concurrent_predicts_match_sequential(tiny_bundle: Path) -> None:
    from lightwam_ros.inference.pipeline import PolicyPipeline

    with PolicyPipeline.from_bundle(tiny_bundle, backend="torch", device="cpu") as pipe:
        assert pipe.max_concurrency == 1  # CPU: overlap only shares the same cores
        _concurrent_matches_sequential(pipe, workers=2, calls=6)
        assert set(pipe.backend.last_timings_ms) == {"vae", "dit", "expert"}


@pytest.mark.numeric
def test_onnx_pipeline_concurrent_predicts_match_sequential(onnx_bundle: Path) -> None:
    from lightwam_ros.inference.pipeline import PolicyPipeline

    with PolicyPipeline.from_bundle(onnx_bundle, backend="onnx", device="cpu") as pipe:
        assert pipe.max_concurrency == 1
        _concurrent_matches_sequential(pipe, workers=2, calls=6)


@pytest.mark.gpu
@pytest.mark.numeric
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: per-thread CUDA streams are only "
                    "exercised there (run test/gpu_check.sh on a GPU machine)")
@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_cuda_pipeline_concurrent_predicts_match_sequential(backend: str, onnx_bundle: Path) -> None:
    from lightwam_ros.inference.pipeline import PolicyPipeline

    try:
        pipe = PolicyPipeline.from_bundle(onnx_bundle, backend=backend, device="cuda", dtype="float32")
    except ValueError as exc:  # onnxruntime without a GPU provider
        pytest.skip(str(exc))
    with pipe:
        pipe.warmup(1)
        assert pipe.max_concurrency == 4
        _concurrent_matches_sequential(pipe, workers=3, calls=9, atol=1e-5)  # cuBLAS may differ per stream
