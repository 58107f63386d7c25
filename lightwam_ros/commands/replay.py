"""`lightwam replay`: a rosbag2 through the policy node, offline or live (lightwam_ros.replay.runner)."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from lightwam_ros.replay.bags import BagError
from lightwam_ros.replay.metrics import motion_summary_lines
from lightwam_ros.replay.options import ReplayError, ReplayMode, ReplayOptions
from lightwam_ros.replay.runner import ReplayResult, run_replay
from lightwam_ros.ros.launch_config import DDS_PROFILES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bag", required=True, help="rosbag2 directory (MCAP or sqlite3)")
    parser.add_argument("--profile", required=True, help="robot profile name (config/<name>.yaml) or YAML path")
    parser.add_argument("--bundle", default=None, help="model bundle directory (overrides the profile's bundle)")
    parser.add_argument("--out", required=True, help="output directory: outputs/ (MCAP), report.json, plot.png")
    parser.add_argument("--mode", default="offline", choices=[m.value for m in ReplayMode],
                        help="offline: node callbacks on the bag clock, no DDS (default); "
                             "live: publish over DDS with original timing to a node process")
    parser.add_argument("--rate", type=float, default=1.0, help="live: playback speed factor (default 1)")
    parser.add_argument("--start", type=float, default=0.0, help="start S seconds into the bag")
    parser.add_argument("--duration", type=float, default=None, help="replay only D seconds")
    parser.add_argument("--latency", type=float, default=0.0, metavar="MS",
                        help="offline: simulated inference latency on the bag clock in ms, the mean with "
                             "--latency-jitter (default 0: merged at the next control tick)")
    parser.add_argument("--latency-jitter", type=float, default=0.0, metavar="MS",
                        help="offline: latency uniform on [MS - J, MS + J] per request, drawn from --seed "
                             "(default 0: fixed)")
    parser.add_argument("--latency-file", type=Path, default=None, metavar="JSON",
                        help="offline: draw each latency from measured ones: `lightwam bench --json` output "
                             "(its per-run totals) or a JSON list of ms; drawn from --seed")
    parser.add_argument("--seed", type=int, default=0,
                        help="offline: seed of the latency draws (default 0); the same seed gives the same report")
    parser.add_argument("--dds-profile", default="shm", choices=[*DDS_PROFILES, "none"],
                        help="live: the Fast DDS profile of the replay and the node, as the launch file's "
                             "dds_profile:= (default shm; udp when the node runs on another host or with "
                             "--node-prefix in another network namespace)")
    parser.add_argument("--node-prefix", default="", metavar="CMD",
                        help="live: run the node's command line through this command, split like a shell "
                             "does (e.g. 'ip netns exec policy_ns'); it must pass the environment on and see "
                             "the same paths (bundle, a temporary params file)")
    parser.add_argument("--namespace", default="/", help="node namespace (relative profile topics resolve under it)")
    parser.add_argument("--reference", default=None, metavar="TOPIC",
                        help="open-loop reference: a JointState, JointTrajectory or Float64MultiArray topic "
                             "in the bag (default: the profile's joints.state_topic)")
    parser.add_argument("--no-plot", action="store_true", help="skip plot.png")
    parser.add_argument("--compare-merge", action="store_true",
                        help="offline: replay the bag once per chunk merge mode (replace, blend, ensemble) and "
                             "latency (--compare-latencies, jittered by --compare-jitter), each run in its own "
                             "subdirectory of --out, and print one table: open-loop MAE, seam jump p99 ratio, "
                             "jerk p99, share of ticks following the policy")
    parser.add_argument("--compare-latencies", default="0,100,250", metavar="MS[,MS...]",
                        help="--compare-merge: simulated latencies in ms (default 0,100,250)")
    parser.add_argument("--compare-jitter", type=float, default=0.2, metavar="FRACTION",
                        help="--compare-merge: each latency uniform on MS +- FRACTION x MS (default 0.2), "
                             "drawn from --seed")


def latency_line(inference: dict) -> str:
    """The latency model offline replay simulated, and what it drew (ms)."""
    m = inference["latency_model"]
    if m["kind"] == "fixed":
        return f"fixed {m['latency_ms']:g} ms"
    drawn = inference.get("simulated_latency_ms", {})
    got = f"; drawn p50 {drawn['p50']} ms, max {drawn['max']} ms" if drawn.get("count") else ""
    if m["kind"] == "uniform":
        return f"uniform {m['mean_ms']:g} +- {m['jitter_ms']:g} ms (seed {m['seed']}){got}"
    return f"{m['samples']} samples from {m['file']} (seed {m['seed']}){got}"


def summary_lines(result: ReplayResult) -> list[str]:
    """The figures a user looks at first (the rest is in report.json)."""
    r = result.report
    fs = r.get("frame_sets", {})
    lines = [f"{r['mode']} replay of {r['bag']} ({r['window']['duration_s']:.1f} s): "
             f"{r['chunks']['published']} chunks published"]
    if r.get("undecodable"):
        lines.append(f"undecodable messages skipped, per topic: {r['undecodable']}")
    if r["mode"] == "offline":
        tp = r["throughput"]
        lines.append(f"frame sets: {fs['in_bag']} in bag, {fs['formed']} formed, {fs['used']} used, "
                     f"dropped {fs['dropped']}")
        lines.append(f"offline throughput: {tp['frame_sets_per_s']} frame sets/s "
                     f"({tp['wall_s']:.1f} s wall for {tp['bag_s']:.1f} s of bag, x{tp['realtime_factor']} real time)")
        lines.append(f"holds (ticks): {r['holds']['by_reason']}")
        lines.append(f"simulated inference latency: {latency_line(r['inference'])}")
    else:
        d = r["delivery"]
        lines.append(f"live delivery: {d['frames_published']} frames / {d['frame_sets_published']} frame sets "
                     f"published; the node formed {d['frame_sets_formed_by_node']} sets "
                     f"({d['frame_sets_fresh']} fresh) and used {d['frame_sets_used']}")
        lines.append(f"holds (ticks): {r['holds']['by_reason']}; node latency {r['node']['latency_ms']}")
    lat = r.get("latency_ms", {}).get("total")
    if lat and lat.get("count"):
        lines.append(f"inference total latency: p50 {lat['p50']} ms, p90 {lat['p90']} ms, p99 {lat['p99']} ms")
    ole = r.get("open_loop_error", {})
    if ole.get("mae") is not None:
        lines.append(f"open-loop error vs {ole['reference_topic']}: MAE {ole['mae']:.4f}, RMSE {ole['rmse']:.4f} "
                     f"(robot units, {ole['chunks_scored']} chunks x {ole['steps_scored']} steps)")
    else:
        lines.append(f"open-loop error: not available ({ole.get('reason')})")
    lines += motion_summary_lines(r.get("motion", {"available": False, "reason": "not computed"}))
    lines.append(f"wrote {result.report_path}, {result.output_bag}"
                 + (f", {result.plot_path}" if result.plot_path else ""))
    return lines


def run_compare(args: argparse.Namespace) -> int:
    """--compare-merge: the merge modes x latencies table (lightwam_ros.replay.compare)."""
    from lightwam_ros.replay.compare import compare_merge, table_lines

    try:
        if args.mode != "offline":
            raise ReplayError("--compare-merge replays offline; leave out --mode live")
        if args.latency or args.latency_jitter or args.latency_file:
            raise ReplayError("--compare-merge sets the latencies itself: use --compare-latencies and "
                              "--compare-jitter instead of --latency, --latency-jitter and --latency-file")
        try:
            latencies = [float(x) for x in args.compare_latencies.split(",") if x.strip()]
        except ValueError:
            raise ReplayError(f"--compare-latencies: comma-separated ms expected, got {args.compare_latencies!r}") \
                from None
        tables = compare_merge([args.bag], args.profile, args.out, bundle=args.bundle, latencies_ms=latencies,
                               jitter_fraction=args.compare_jitter, seed=args.seed, start_s=args.start,
                               duration_s=args.duration, plot=not args.no_plot,
                               progress=lambda s: print(f"replaying {s}", flush=True))
    except (ReplayError, BagError) as exc:
        print(f"lightwam replay: error: {exc}", file=sys.stderr)
        return 2
    for bag, rows in tables.items():
        print(f"merge modes compared on {bag} (offline, seed {args.seed}; runs in {args.out}):")
        for line in table_lines(rows):
            print(line)
    return 0


def run(args: argparse.Namespace) -> int:
    if args.compare_merge:
        return run_compare(args)
    try:
        options = ReplayOptions(bag=args.bag, profile=args.profile, bundle=args.bundle, out=args.out,
                                mode=args.mode, rate=args.rate, start_s=args.start, duration_s=args.duration,
                                latency_ms=args.latency, latency_jitter_ms=args.latency_jitter,
                                latency_file=args.latency_file, seed=args.seed, namespace=args.namespace,
                                reference_topic=args.reference, plot=not args.no_plot,
                                dds_profile=args.dds_profile, node_prefix=shlex.split(args.node_prefix))
        result = run_replay(options)
    except (ReplayError, BagError) as exc:
        print(f"lightwam replay: error: {exc}", file=sys.stderr)
        return 2
    for line in summary_lines(result):
        print(line)
    return 0
