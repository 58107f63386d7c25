"""Overlapping inference in the node: with an inference latency of 0.6 of a chunk's duration, one
worker cannot keep the plan alive (the next request can only start when the previous chunk
arrives, and its chunk lands after the plan ended: a hold every cycle), while two workers
overlapping their requests follow the policy without a single hold after the first chunk.

On the simulated clock of test/support/fault_sim.py (real PolicyNode, exact timing). The CPU backend caps
the node's worker count at 1 (max_concurrency), so the two-worker run uses fault_sim's test-only
``workers`` hook, standing in for a GPU backend whose max_concurrency allows it.
"""

from __future__ import annotations

from lightwam_ros.control.safety import HoldReason

CHUNK_S = 24 * 0.020  # demo profile: 24 usable steps at 20 ms
LATENCY_MS = 0.6 * CHUNK_S * 1e3  # 288 ms


def _after_first_chunk(sim):
    first = next(i for i, tk in enumerate(sim.ticks) if tk.hold is None)
    return sim.ticks[first:]


def test_two_workers_overlap_requests_and_never_hold(sim_factory) -> None:
    sim = sim_factory(name="lw_overlap2", latency_ms=LATENCY_MS, workers=2)
    controller = sim.controller
    assert controller.workers == 2 and controller.scheduler.config.max_inflight == 2
    # configure primes the scheduler with the warm-up latency; on the robot that is the real one,
    # here the CPU warm-up is faster than the simulated 288 ms, so prime it as the warm-up would
    # (unprimed, the second request goes out late once and the first plan runs out: one hold)
    controller.scheduler.prime(round(LATENCY_MS * 1e6), controller.steps, controller.model.dt_ns)
    sim.run(4.0)
    ticks = _after_first_chunk(sim)
    assert len(ticks) * 0.020 >= 6 * CHUNK_S  # several chunks' worth of ticks
    holds = [(tk.t_ns, tk.hold) for tk in ticks if tk.hold is not None]
    assert not holds, holds[:5]
    assert all(tk.command is not None for tk in ticks)  # forward mode: a command every tick
    records = sim.worker.records
    assert len(records) >= 8 and all(r.chunk is not None for r in records)
    # requests really overlapped: some request started before the previous one's chunk was ready
    assert any(b.request_ns < a.ready_ns for a, b in zip(records, records[1:]))


def test_one_worker_with_the_same_latency_holds_every_cycle(sim_factory) -> None:
    """The control case: the same latency with the node's own (CPU) worker count of 1."""
    sim = sim_factory(name="lw_overlap1", latency_ms=LATENCY_MS, chunk__max_inflight=2)
    assert sim.controller.workers == 1 and sim.controller.scheduler.config.max_inflight == 1
    assert any("chunk.max_inflight 2" in m and "running 1 inference worker" in m
               for lv, m, _ in sim.log.records if lv == "warning")
    sim.run(4.0)
    ticks = _after_first_chunk(sim)
    exhausted = [tk for tk in ticks if tk.hold is HoldReason.CHUNK_EXHAUSTED]
    assert len(exhausted) >= 4
    records = sim.worker.records
    assert all(b.request_ns >= a.ready_ns for a, b in zip(records, records[1:]))  # never overlapping
