"""`lightwam replay --compare-merge`: the same bag replayed offline with each chunk merge mode at
several simulated latencies, and one table per bag of what each run's report says.

Why: replace, blend and ensemble trade seam smoothness against reaction time differently, and how
much depends on the latency (it sets how far chunks overlap). Open-loop error cannot tell them
apart (it scores each chunk alone, before merging) but is printed as the sanity check that the
runs saw the same policy; the seam ratio, the executed jerk and the share of ticks following the
policy are what the merge changes.

Each run is an ordinary offline replay (``run_replay``) of a copy of the profile with only
``chunk.merge`` changed, written to its own subdirectory of ``out`` (``<merge>_<latency>``; with
several bags under ``out/<bag directory name>/``), so any run can be opened like a single replay.
Latencies above 0 are uniform on MS +- jitter_fraction x MS from ``seed`` (replay/latency.py); the
same seed is used for every mode, so the modes see the same latency draws request by request only
as long as they ask at the same moments (they usually diverge after the first merges).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightwam_ros.config import MergeMode
from lightwam_ros.replay.options import ReplayError, ReplayOptions

MERGE_MODES: tuple[str, ...] = tuple(m.value for m in MergeMode)
DEFAULT_LATENCIES_MS: tuple[float, ...] = (0.0, 100.0, 250.0)
DEFAULT_JITTER_FRACTION = 0.2  # 100 +- 20 ms, 250 +- 50 ms


@dataclass(frozen=True)
class CompareRow:
    """One run: the four figures of the table (None where the report has none)."""

    merge: str
    latency_ms: float
    jitter_ms: float
    out: Path
    open_loop_mae: float | None
    mae_vs_hold_still: float | None  # open-loop MAE / the hold-still baseline's
    seam_ratio_p99: float | None  # worst joint
    seam_worst_joint: str | None
    jerk_p99: float | None  # max over joints, units/s^3
    following: float | None  # fraction of ticks after the first chunk

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["out"] = str(self.out)
        return d


def row_from_report(merge: str, latency_ms: float, jitter_ms: float, out: Path, report: dict) -> CompareRow:
    """The table's figures from one report.json: open_loop_error.mae and mae_vs_hold_still, motion.seams.worst
    (ratio_p99 and joint), the max over joints of motion.executed.jerk.p99, and
    motion.following_after_first_chunk.fraction."""
    ole = report.get("open_loop_error", {})
    motion = report.get("motion", {})
    worst = motion.get("seams", {}).get("worst") if motion.get("available") else None
    jerk = [v for v in motion.get("executed", {}).get("jerk", {}).get("p99", []) if v is not None] \
        if motion.get("available") else []
    following = motion.get("following_after_first_chunk", {}).get("fraction") if motion.get("available") else None
    return CompareRow(merge, latency_ms, jitter_ms, out, ole.get("mae"), ole.get("mae_vs_hold_still"),
                      None if worst is None else worst["ratio_p99"], None if worst is None else worst["joint"],
                      max(jerk) if jerk else None, following)


def merge_profile(profile: str, merge: str, path: Path) -> Path:
    """Write the profile with chunk.merge set to ``merge`` (every other parameter as loaded) to
    ``path``, in the flat rcl form load_profile reads back; returns path."""
    import yaml

    from lightwam_ros.config.parameters import ConfigError
    from lightwam_ros.config.profiles import load_profile

    try:
        node, params = load_profile(profile)
    except ConfigError as exc:
        raise ReplayError(f"--profile {profile}: {exc}") from None
    params = dict(params, **{"chunk.merge": merge})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({node: {"ros__parameters": params}}, sort_keys=False))
    return path


def run_name(merge: str, latency_ms: float, jitter_ms: float) -> str:
    return f"{merge}_lat{latency_ms:g}" + (f"pm{jitter_ms:g}" if jitter_ms else "")


def compare_merge(bags: Sequence[Path | str], profile: str, out: Path | str, bundle: str | None = None,
                  latencies_ms: Sequence[float] = DEFAULT_LATENCIES_MS,
                  jitter_fraction: float = DEFAULT_JITTER_FRACTION, seed: int = 0,
                  merges: Sequence[str] = MERGE_MODES, start_s: float = 0.0, duration_s: float | None = None,
                  plot: bool = False, progress: Callable[[str], None] | None = None) -> dict[str, list[CompareRow]]:
    """Replay every bag offline once per (merge mode, latency); returns the rows per bag (str(bag))
    and writes ``out/compare.json`` and ``out/compare.md`` (the tables)."""
    from lightwam_ros.replay.runner import run_replay

    if not 0 <= jitter_fraction <= 1:
        raise ReplayError(f"--compare-jitter must be in [0, 1] (a fraction of each latency), got {jitter_fraction}")
    for m in merges:
        if m not in MERGE_MODES:
            raise ReplayError(f"unknown merge mode {m!r}; one of {', '.join(MERGE_MODES)}")
    out = Path(out)
    tables: dict[str, list[CompareRow]] = {}
    for bag in bags:
        bag = Path(bag)
        base = out / bag.name if len(bags) > 1 else out
        rows = []
        for merge in merges:
            prof = merge_profile(profile, merge, base / f"profile_{merge}.yaml")
            for lat in latencies_ms:
                jitter = round(lat * jitter_fraction, 3)
                run_out = base / run_name(merge, lat, jitter)
                if progress:
                    progress(f"{bag.name}: {run_name(merge, lat, jitter)}")
                result = run_replay(ReplayOptions(bag=bag, profile=str(prof), bundle=bundle, out=run_out,
                                                  start_s=start_s, duration_s=duration_s, latency_ms=lat,
                                                  latency_jitter_ms=jitter, seed=seed, plot=plot))
                report = json.loads(result.report_path.read_text())
                rows.append(row_from_report(merge, lat, jitter, run_out, report))
        tables[str(bag)] = rows
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.json").write_text(json.dumps({b: [r.as_dict() for r in rows] for b, rows in tables.items()},
                                                 indent=2))
    (out / "compare.md").write_text("\n\n".join(f"{b}\n\n" + "\n".join(table_lines(rows))
                                              for b, rows in tables.items()) + "\n")
    return tables


def _fmt(v: float | None, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def table_lines(rows: Sequence[CompareRow]) -> list[str]:
    """A Markdown table, one line per run (printed and written to compare.md)."""
    lines = ["| merge | latency (ms) | open-loop MAE (/ hold-still) | seam jump p99 / within p99 (worst joint) | "
             "jerk p99 (max joint, /s^3) | following after 1st chunk |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lat = f"{r.latency_ms:g}" + (f" +- {r.jitter_ms:g}" if r.jitter_ms else "")
        seam = "n/a" if r.seam_ratio_p99 is None else f"{r.seam_ratio_p99:.2f} ({r.seam_worst_joint})"
        mae = _fmt(r.open_loop_mae, '.4f') + ("" if r.mae_vs_hold_still is None else f" ({r.mae_vs_hold_still:.3f})")
        lines.append(f"| {r.merge} | {lat} | {mae} | {seam} | "
                     f"{_fmt(r.jerk_p99, '.4g')} | {_fmt(None if r.following is None else 100 * r.following, '.1f')}"
                     f"{'' if r.following is None else ' %'} |")
    return lines
