"""Soak benchmark: the live node for minutes at full rate -- memory, drops, control period, errors.

    .venv/bin/python test/benchmarks/soak.py [--minutes 30] [--flood] [--camera-hz 30] [--size 480x640]
        [--sample-s 10] [--keep DIR] [--json FILE]

The real node (lightwam_ros.ros.node in its own process, config/demo.yaml with the tiny demo bundle on
the CPU, forward output) is fed over real DDS by a feeder process looping pre-rendered synthetic
frames (3 cameras, stamped at send time, so the recording never ends and needs no disk: a 30-minute
bag of 3 x 480x640 at 30 Hz would be ~150 GB) plus joint states at 100 Hz and a latched instruction.
Every --sample-s it records the node's resident memory (/proc VmRSS) and /diagnostics. At the end
it prints:
  memory     RSS at the start of the window, at the end, max, and the least-squares slope (MiB/min)
             over the second half (a leak shows as a steady slope, allocator warm-up does not)
  frames     frame sets sent by the feeder, formed by the node's FrameSync, fresh (used-able), and
             every drop reason the node counted; the max per-camera sync queue seen
  control    control-period deviation p50/p99/max and missed ticks from the node's own tick times
  inference  chunks accepted / other outcomes, latency p50/p99 (the node's diagnostics)
  errors     ERROR lines in the node log, and the worst diagnostics level per status
--flood sends the cameras at 200 Hz (issue: show that queues and memory stay bounded when the
cameras outrun the node). Exit status 1 if the node died, logged errors, or memory grew by more than
--max-growth-mib over the window.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import live_harness as H

LEVELS = {0: "OK", 1: "WARN", 2: "ERROR", 3: "STALE"}


def _f(values: dict, key: str, default: float = 0.0) -> float:
    try:
        return float(values.get(key, default))
    except (TypeError, ValueError):
        return default


def slope_mib_per_min(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MiB) over the second half of the samples."""
    half = samples[len(samples) // 2:]
    if len(half) < 2:
        return float("nan")
    t = np.array([s[0] for s in half]) / 60.0
    m = np.array([s[1] for s in half])
    return float(np.polyfit(t, m, 1)[0])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=30.0, help="soak window after the node follows the policy")
    p.add_argument("--flood", action="store_true", help="cameras at 200 Hz instead of --camera-hz")
    p.add_argument("--camera-hz", type=float, default=30.0)
    p.add_argument("--size", default="480x640", help="camera frame HxW")
    p.add_argument("--encoding", default="rgb8", choices=["rgb8", "bgr8", "rgba8", "bgra8", "mono8"])
    p.add_argument("--sample-s", type=float, default=10.0, help="memory/diagnostics sampling period")
    p.add_argument("--max-growth-mib", type=float, default=50.0, help="fail above this RSS growth over the window")
    p.add_argument("--bundle", type=Path, default=None)
    p.add_argument("--keep", type=Path, default=None, help="keep the node/feeder logs and tick log here")
    p.add_argument("--json", type=Path, default=None, help="also write the figures as JSON")
    p.add_argument("--param", action="append", default=[], metavar="NAME=YAML", help="extra node parameter")
    p.add_argument("--tweak", action="append", default=[], choices=H.TWEAKS,
                   help="experiment on the node process, see live_harness.TWEAKS")
    a = p.parse_args(argv)

    H.isolate_environment()
    import yaml

    camera_hz = 200.0 if a.flood else a.camera_hz
    bundle = a.bundle or H.ensure_tiny_bundle(Path(tempfile.gettempdir()) / "lightwam_bench_bundle_tiny")
    params = H.node_parameters(bundle, **{k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in a.param)})
    period_ns = round(1e9 / float(params["control_rate_hz"]))
    queue_size = int(params.get("sync.queue_size", 10))
    h, w = (int(v) for v in a.size.split("x"))
    workdir = a.keep or Path(tempfile.mkdtemp(prefix="lightwam_soak_"))
    workdir.mkdir(parents=True, exist_ok=True)
    load0 = os.getloadavg()[0]
    rss: list[tuple[float, float]] = []
    queue_max: dict[str, float] = {}
    died = None
    recorder = H.Recorder()
    try:
        with H.node_process(params, workdir, a.tweak) as node, \
                H.feeder_process(params, camera_hz=camera_hz, size=(h, w), encoding=a.encoding, workdir=workdir):
            startup = recorder.wait_active(node)
            recorder.wait_following()
            time.sleep(2.0)
            d0_ns, diag0 = recorder.diagnostics_at()
            t0_wall = time.monotonic()
            t0 = time.monotonic_ns()
            end = t0_wall + a.minutes * 60.0
            next_sample = t0_wall
            while True:
                now = time.monotonic()
                if node.proc.poll() is not None:
                    died = f"the node exited with code {node.proc.returncode} after {now - t0_wall:.0f} s"
                    break
                if now >= next_sample:
                    rss.append((now - t0_wall, H.rss_mb(node.proc.pid)))
                    cams = recorder.diagnostics().get("cameras", {})
                    for k in cams:
                        if k.endswith(".queue"):
                            queue_max[k[:-6]] = max(queue_max.get(k[:-6], 0.0), _f(cams, k))
                    next_sample += a.sample_s
                if now >= end:
                    break
                time.sleep(min(0.5, max(0.0, min(end, next_sample) - now)))
            t1 = time.monotonic_ns()
            time.sleep(1.5)  # one more /diagnostics after the window
            d1_ns, diag1 = recorder.diagnostics_at()
            worst = dict(recorder.data.worst_level)
            node.stop()
            errors = node.errors()
            try:
                starts, _ = node.ticks()
            except (OSError, ValueError):
                starts = np.zeros(0, dtype=np.int64)
        feeder = H.feeder_stats(workdir)
    finally:
        recorder.close()
    window_s = (t1 - t0) / 1e9
    load1 = os.getloadavg()[0]
    ticks = H.period_stats(starts[(starts >= t0) & (starts <= t1)], period_ns)
    s0, s1 = diag0.get("sync", {}), diag1.get("sync", {})
    i0, i1 = diag0.get("inference", {}), diag1.get("inference", {})
    drops = {k.removeprefix("drops."): int(_f(s1, k) - _f(s0, k)) for k in s1 if k.startswith("drops.")}
    outcomes = {k.removeprefix("chunks."): int(_f(i1, k) - _f(i0, k)) for k in i1 if k.startswith("chunks.")}
    holds = {k.removeprefix("safety.hold."): v for k, v in diag1.get("control", {}).items()
             if k.startswith("safety.hold.")}
    growth = rss[-1][1] - rss[0][1] if len(rss) > 1 else float("nan")
    diag_s = max((d1_ns - d0_ns) / 1e9, 1e-9)  # the span the diagnostics counters cover
    sent_hz = feeder["frame_sets"] / feeder["seconds"] if feeder.get("frame_sets") and feeder.get("seconds") else None
    formed_hz = (_f(s1, "sets_formed") - _f(s0, "sets_formed")) / diag_s
    figures = {
        "window_s": window_s, "camera_hz": camera_hz, "size": [h, w], "encoding": a.encoding, "flood": a.flood,
        "load_average": [load0, load1], "cpus": os.cpu_count(), "startup_s": startup,
        "rss_mib": {"start": rss[0][1] if rss else None, "end": rss[-1][1] if rss else None,
                    "max": max(m for _, m in rss) if rss else None, "growth": growth,
                    "slope_second_half_mib_per_min": slope_mib_per_min(rss), "samples": rss},
        "frame_sets": {"sent_total": feeder.get("frame_sets"), "feeder_seconds": feeder.get("seconds"),
                       "sent_hz": sent_hz, "formed_hz": formed_hz, "diagnostics_span_s": diag_s,
                       "formed": int(_f(s1, "sets_formed") - _f(s0, "sets_formed")),
                       "fresh": int(_f(s1, "sets_emitted") - _f(s0, "sets_emitted")),
                       "drops": drops, "queue_max": queue_max, "queue_size": queue_size},
        "control": ticks,
        "inference": {"chunks": outcomes, "total_ms_p50": _f(i1, "total_ms.p50", float("nan")),
                      "total_ms_p99": _f(i1, "total_ms.p99", float("nan")),
                      "request_to_chunk_ms": _f(i1, "request_to_chunk_ms", float("nan"))},
        "holds_total": holds,
        "errors": {"node_log": errors[:20], "n_node_log": len(errors), "died": died,
                   "worst_diag_level": {k: LEVELS.get(v, str(v)) for k, v in worst.items()}},
    }

    print(f"soak: {window_s / 60:.1f} min, 3 cameras {h}x{w} {a.encoding} at {camera_hz:g} Hz"
          f"{' (flood)' if a.flood else ''}, tiny bundle on CPU; {os.cpu_count()} CPUs, load average "
          f"{load0:.2f} -> {load1:.2f}; node startup {startup:.1f} s; logs in {workdir}")
    r = figures["rss_mib"]
    if rss:
        print(f"memory (node RSS, MiB): start {r['start']:.1f}, end {r['end']:.1f}, max {r['max']:.1f}, growth "
              f"{growth:+.1f}, slope over the second half {r['slope_second_half_mib_per_min']:+.3f} MiB/min "
              f"({len(rss)} samples)")
    fs = figures["frame_sets"]
    print(f"frame sets: feeder sent {sent_hz or float('nan'):.2f}/s (its whole run), node formed {formed_hz:.2f}/s "
          f"({fs['formed']} formed, {fs['fresh']} fresh in {diag_s:.0f} s of diagnostics); drops "
          f"{ {k: v for k, v in drops.items() if v} or 'none'}; max sync queue per camera {queue_max} "
          f"(queue_size {queue_size})")
    if ticks.get("n", 0) >= 2:
        print(f"control period: dev p50 {ticks['dev_p50_ms']:.3f} ms, p99 {ticks['dev_p99_ms']:.3f} ms, max "
              f"{ticks['dev_max_ms']:.3f} ms, missed ticks {int(ticks['missed'])} of {int(ticks['n'])}")
    print(f"inference: chunks {outcomes}, total p50 {figures['inference']['total_ms_p50']:.1f} ms p99 "
          f"{figures['inference']['total_ms_p99']:.1f} ms; holds (cumulative) {holds}")
    print(f"errors: {len(errors)} ERROR lines in the node log{'; ' + died if died else ''}; worst diagnostics "
          f"levels {figures['errors']['worst_diag_level']}")
    if errors:
        print("  first: " + errors[0])
    if a.json:
        a.json.write_text(json.dumps(figures, indent=2, default=float))
    failed = died is not None or bool(errors) or (growth == growth and growth > a.max_growth_mib)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
