"""ChunkScheduler on a simulated clock: elapsed-step dropping, trained-step limit, merges, tick
interpolation, inference pacing. Expected values are computed by hand in the comments."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lightwam_ros.config import ChunkConfig, MergeMode
from lightwam_ros.scheduler import ChunkOutcome, ChunkScheduler, TickStatus
from lightwam_ros.types import ActionChunk

MS = 1_000_000
DT = 20 * MS


def chunk(values, stamp_ns, trained=24, dt=DT) -> ActionChunk:
    a = np.asarray(values, dtype=np.float32)
    if a.ndim == 1:
        a = a[:, None]
    return ActionChunk(actions=a, stamp_ns=stamp_ns, dt_ns=dt, trained_steps=trained)


def ramp(n=32, offset=0.0):
    return np.arange(n, dtype=np.float32) + offset


def sched(merge=MergeMode.BLEND, blend=4, execute=0, margin=0.5) -> ChunkScheduler:
    return ChunkScheduler(ChunkConfig(merge, blend, execute, margin))


def value(s: ChunkScheduler, t: int) -> float:
    tick = s.tick(t)
    assert tick.status is TickStatus.OK, tick
    return float(tick.action[0])


def test_empty_before_first_chunk():
    s = sched()
    t = s.tick(0)
    assert t.action is None and t.status is TickStatus.EMPTY and t.remaining_steps == 0
    assert s.wants_inference(0)
    assert s.upcoming(0).shape == (0, 0)


def test_elapsed_steps_dropped_and_tick_interpolates():
    s = sched()
    # steps at 0, 20, 40, 60 ... ms; arrival at 50 ms: steps 0..2 elapsed, first remaining is k=3
    assert s.on_chunk(chunk(ramp(), 0), 50 * MS) is ChunkOutcome.ACCEPTED
    assert value(s, 50 * MS) == pytest.approx(2.5)  # the trajectory where it is now
    assert value(s, 60 * MS) == pytest.approx(3.0)
    assert value(s, 70 * MS) == pytest.approx(3.5)
    assert s.remaining_steps(50 * MS) == 21  # steps 3..23
    assert s.tick(50 * MS).remaining_steps == 21


def test_tick_phase_offset_uses_interpolation_not_nearest_step():
    s = sched()
    s.on_chunk(chunk(ramp(), 5 * MS), 5 * MS)
    # tick at 20 ms lies 15/20 of the way from step 0 (5 ms) to step 1 (25 ms)
    assert value(s, 20 * MS) == pytest.approx(0.75)
    assert value(s, 40 * MS) == pytest.approx(1.75)


def test_never_beyond_trained_steps():
    s = sched()
    s.on_chunk(chunk(ramp(32), 0, trained=24), 0)
    assert value(s, 460 * MS) == pytest.approx(23.0)  # step 23 = the last trained one
    t = s.tick(460 * MS + 1)
    assert t.status is TickStatus.EXHAUSTED and t.action is None
    assert s.wants_inference(460 * MS + 1)


def test_execute_steps_limits_and_never_exceeds_trained():
    s = sched(execute=10)
    s.on_chunk(chunk(ramp(32), 0, trained=24), 0)
    assert value(s, 180 * MS) == pytest.approx(9.0)
    assert s.tick(181 * MS).status is TickStatus.EXHAUSTED
    s = sched(execute=30)
    s.on_chunk(chunk(ramp(32), 0, trained=24), 0)
    assert s.tick(461 * MS).status is TickStatus.EXHAUSTED
    s = sched()
    s.on_chunk(chunk(ramp(8), 0, trained=24), 0)  # a horizon shorter than trained_steps
    assert s.tick(141 * MS).status is TickStatus.EXHAUSTED


def test_chunk_with_every_step_elapsed_expires():
    s = sched()
    assert s.on_chunk(chunk(ramp(), 0), 461 * MS) is ChunkOutcome.EXPIRED
    assert s.tick(461 * MS).status is TickStatus.EMPTY
    # exactly at the last step's time it is still usable (t_k < now is elapsed, t_k == now is not)
    assert s.on_chunk(chunk(ramp(), 1 * MS), 461 * MS) is ChunkOutcome.ACCEPTED
    assert value(s, 461 * MS) == pytest.approx(23.0)


def test_older_or_equal_chunks_refused():
    s = sched()
    s.on_chunk(chunk(ramp(), 100 * MS), 100 * MS)
    assert s.on_chunk(chunk(ramp(offset=50), 100 * MS), 110 * MS) is ChunkOutcome.OUT_OF_ORDER
    assert s.on_chunk(chunk(ramp(offset=50), 90 * MS), 110 * MS) is ChunkOutcome.OUT_OF_ORDER
    assert value(s, 120 * MS) == pytest.approx(1.0)  # plan unchanged


def test_replace_switches_at_once_to_where_the_new_trajectory_is():
    s = sched(merge=MergeMode.REPLACE)
    s.on_chunk(chunk(np.zeros(32), 0), 0)
    s.on_chunk(chunk(ramp(offset=10), 100 * MS), 150 * MS)
    # new steps at 100, 120, 140, 160 ms with values 10, 11, 12, 13: at 150 ms -> 12.5
    assert value(s, 150 * MS) == pytest.approx(12.5)
    assert value(s, 160 * MS) == pytest.approx(13.0)


def test_blend_crossfades_linearly_over_blend_steps():
    s = sched(merge=MergeMode.BLEND, blend=4)
    s.on_chunk(chunk(np.zeros(32), 0), 0)
    s.on_chunk(chunk(np.ones(32), 100 * MS), 150 * MS)
    # window = 4 * 20 ms from the arrival at 150 ms: value (t - 150) / 80 until 230 ms, then 1
    for t_ms, v in [(150, 0.0), (160, 0.125), (170, 0.25), (180, 0.375), (200, 0.625), (220, 0.875),
                    (230, 0.9375), (240, 1.0), (300, 1.0)]:
        assert value(s, t_ms * MS) == pytest.approx(v), t_ms


def test_blend_window_is_the_overlap_with_the_old_plan():
    s = sched(merge=MergeMode.BLEND, blend=4)
    s.on_chunk(chunk(np.zeros(32), 0), 0)  # ends at 460 ms
    s.on_chunk(chunk(np.ones(32), 400 * MS), 450 * MS)
    # overlap 10 ms < 4 steps: the crossfade runs from 450 ms (0) to 460 ms (1)
    for t_ms, v in [(450, 0.0), (455, 0.5), (460, 1.0), (480, 1.0)]:
        assert value(s, t_ms * MS) == pytest.approx(v), t_ms


def test_blend_without_live_plan_or_zero_steps_is_replace():
    s = sched(merge=MergeMode.BLEND, blend=4)
    s.on_chunk(chunk(np.zeros(32), 0), 0)
    s.on_chunk(chunk(np.ones(32), 470 * MS), 480 * MS)  # old plan ended at 460 ms
    assert value(s, 480 * MS) == pytest.approx(1.0)
    s = sched(merge=MergeMode.BLEND, blend=0)
    s.on_chunk(chunk(np.zeros(32), 0), 0)
    s.on_chunk(chunk(np.ones(32), 100 * MS), 150 * MS)
    assert value(s, 150 * MS) == pytest.approx(1.0)


def test_multi_dim_actions():
    s = sched()
    a = np.stack([ramp(), -ramp(), np.full(32, 7.0)], axis=1)
    s.on_chunk(chunk(a, 0), 10 * MS)
    t = s.tick(30 * MS)
    assert t.action.dtype == np.float64 and t.action.shape == (3,)
    np.testing.assert_allclose(t.action, [1.5, -1.5, 7.0])


def test_upcoming_samples_the_plan_at_k_plus_one_dt():
    s = sched()
    s.on_chunk(chunk(ramp(), 0), 50 * MS)
    up = s.upcoming(50 * MS)
    # 70, 90, ..., 450 ms (470 is past the last step at 460): 20 points, values 3.5 .. 22.5
    np.testing.assert_allclose(up[:, 0], np.arange(20) + 3.5)
    np.testing.assert_allclose(s.upcoming(50 * MS, max_steps=5)[:, 0], [3.5, 4.5, 5.5, 6.5, 7.5])
    assert s.upcoming(461 * MS).shape == (0, 1)
    assert s.dt_ns == DT and s.stamp_ns == 0


def test_wants_inference_pacing_and_latency_measurement():
    s = sched(margin=0.5)
    assert s.wants_inference(0)
    s.inference_started(0)
    assert s.inference_in_flight and not s.wants_inference(10 * MS)
    s.on_chunk(chunk(ramp(), 0), 50 * MS)
    assert s.expected_latency_ns == 50 * MS and not s.inference_in_flight
    # plan ends at 460 ms; with 200 ms latency the threshold is 300 ms remaining -> from 160 ms
    assert s.remaining_ns(50 * MS) == 410 * MS
    assert not s.wants_inference(159 * MS, expected_latency_ns=200 * MS)
    assert s.wants_inference(160 * MS, expected_latency_ns=200 * MS)
    # with its own estimate (50 ms): remaining <= 75 ms -> from 385 ms
    assert not s.wants_inference(384 * MS) and s.wants_inference(385 * MS)
    s.inference_started(385 * MS)
    s.inference_failed()
    assert not s.inference_in_flight and s.expected_latency_ns == 50 * MS


def test_expected_latency_is_max_of_recent_window():
    s = sched()
    for i, lat in enumerate([30, 80, 40] + [10] * 10):
        s.inference_started(i * 1000 * MS)
        s.on_chunk(chunk(ramp(), i * 1000 * MS), i * 1000 * MS + lat * MS)
        if i == 2:
            assert s.expected_latency_ns == 80 * MS
    assert s.expected_latency_ns == 10 * MS  # 80 left the window of 10


def test_clear_refuses_until_next_accepted_chunk():
    s = sched()
    s.on_chunk(chunk(ramp(), 100 * MS), 100 * MS)
    s.clear()
    assert s.tick(110 * MS).status is TickStatus.REFUSED
    assert s.on_chunk(chunk(ramp(), 90 * MS), 120 * MS) is ChunkOutcome.OUT_OF_ORDER
    assert s.on_chunk(chunk(ramp(), 120 * MS), 120 * MS) is ChunkOutcome.ACCEPTED
    assert s.tick(120 * MS).status is TickStatus.OK
    s.reset()
    assert s.tick(120 * MS).status is TickStatus.EMPTY and s.stamp_ns is None


def test_reconfigure_applies_to_next_chunk():
    s = sched(execute=0)
    s.on_chunk(chunk(ramp(), 0), 0)
    s.reconfigure(ChunkConfig(MergeMode.REPLACE, 0, 5, 0.5))
    assert value(s, 300 * MS) == pytest.approx(15.0)  # plan in flight kept
    s.on_chunk(chunk(ramp(), 300 * MS), 300 * MS)
    assert s.tick(381 * MS).status is TickStatus.EXHAUSTED  # 5 steps: 300..380 ms


def test_keeps_up_formula():
    # 24 steps of 20 ms: the last step is 460 ms after the observation
    assert ChunkScheduler.keeps_up(230 * MS, 24, DT)
    assert not ChunkScheduler.keeps_up(231 * MS, 24, DT)
    assert not ChunkScheduler.keeps_up(200 * MS, 24, DT, frame_age_ns=61 * MS)


# --- closed loop on a simulated clock ------------------------------------------------------------

PERIOD_S = 2.0  # the "true" trajectory every chunk samples: sin(2 pi t / PERIOD_S)


def truth(t_ns: int) -> float:
    return math.sin(2 * math.pi * t_ns / 1e9 / PERIOD_S)


def simulate(latency_ns: int, seconds: float = 6.0, control_hz: float = 50.0, cam_hz: float = 30.0,
             trained: int = 24, margin: float = 0.5):
    """A control timer, cameras with 5 ms transport delay, and a worker whose inference always takes
    latency_ns. Each chunk samples the same smooth trajectory at its own step times, so a correct
    merge and time alignment must reproduce it at every tick."""
    s = ChunkScheduler(ChunkConfig(MergeMode.BLEND, 4, 0, margin))
    tick_ns, cam_ns, phase = int(1e9 / control_hz), int(1e9 / cam_hz), 7 * MS
    pending = None
    log = []  # (now, status, error)
    requests, arrivals = [], []
    for i in range(int(seconds * control_hz)):
        now = i * tick_ns + phase
        if pending is not None and pending[0] <= now:
            arrivals.append(pending[0])
            s.on_chunk(pending[1], pending[0])  # the worker delivers when it finishes
            pending = None
        t = s.tick(now)
        log.append((now, t.status, abs(t.action[0] - truth(now)) if t.action is not None else None))
        if s.wants_inference(now):
            s.inference_started(now)
            requests.append(now)
            stamp = ((now - 5 * MS) // cam_ns) * cam_ns  # newest frame that has arrived
            acts = [truth(stamp + k * DT) for k in range(32)]
            pending = (now + latency_ns, chunk(acts, stamp, trained=trained))
    first_ok = next(i for i, (_, st, _) in enumerate(log) if st is TickStatus.OK)
    after = log[first_ok:]
    empty = [now for now, st, _ in after if st is not TickStatus.OK]
    max_err = max(e for _, st, e in after if st is TickStatus.OK)
    return empty, max_err, requests, arrivals, tick_ns, cam_ns


@pytest.mark.parametrize("fraction", [0.2, 0.3, 0.4])
def test_no_gap_when_latency_fits(fraction):
    chunk_ns = 24 * DT  # duration of the executed chunk
    empty, max_err, requests, _, _, _ = simulate(int(fraction * chunk_ns))
    assert empty == []
    assert max_err < 2e-3  # interpolation error of a sine at 20 ms knots <= 1e-3; a one-step misalignment ~0.06


def test_paced_not_back_to_back_when_inference_is_fast():
    latency = int(0.1 * 24 * DT)  # 48 ms
    empty, _, requests, _, _, _ = simulate(latency)
    assert empty == []
    # back to back would be ~6 s / (48 + 20) ms = 88 requests; paced: about one per 400 ms
    assert len(requests) < 20


def test_latency_above_half_the_chunk_gaps_are_the_physical_minimum():
    """With inference at 60 % of the chunk, no scheduler can be gapless while one inference runs at a
    time (the next observation cannot precede the previous chunk's arrival: 2 L > (n-1) dt). The
    scheduler must then request back to back, and each gap must stay within that bound."""
    latency = int(0.6 * 24 * DT)  # 288 ms
    assert not ChunkScheduler.keeps_up(latency, 24, DT)
    empty, max_err, requests, arrivals, tick_ns, cam_ns = simulate(latency)
    assert empty  # physics
    assert max_err < 2e-3
    for arrival, request in zip(arrivals, requests[1:]):
        assert 0 <= request - arrival < tick_ns  # next request at the first tick after an arrival
    # gap per cycle <= 2 L + frame age (camera period + transport) + one tick - (n - 1) dt
    bound_ticks = math.ceil((2 * latency + cam_ns + 5 * MS + tick_ns - 23 * DT) / tick_ns)
    runs, run, prev = [], 0, None
    for now in empty:
        run = run + 1 if prev is not None and now - prev == tick_ns else 1
        runs.append(run)
        prev = now
    assert max(runs) <= bound_ticks
