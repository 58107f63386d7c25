"""Latency models for offline replay: how long each simulated inference takes on the bag clock.

Offline replay runs the model synchronously and releases each chunk a simulated latency after its
request (replay/simulation.py's SimulatedInference asks the model once per request, in request
order). Which latency decides which frame sets are used, when chunks merge and whether the robot
holds, so replay should see the latencies the robot's computer has, and still be deterministic:
the same bag, profile, bundle and model (with its seed) give the same report on any machine.

- ``FixedLatency`` (``--latency MS``): every request takes the same time (0: the chunk is merged at
  the first control tick after the request).
- ``UniformLatency`` (``--latency MS --latency-jitter J``): uniform on [MS - J, MS + J], drawn per
  request from ``--seed``. Uniform rather than a (truncated) normal because the parameters then say
  exactly what the run sees: MS is the mean, MS + J the worst case, which is what to compare with
  the chunk's budget (``lightwam bench`` / the node's startup advice), and the extremes that stress
  the pacing are as frequent as any other value, so a short replay meets them; a normal's tail
  shows up only now and then, and its truncation would be a third parameter. For the shape of a
  real distribution (skew, a tail), use measured samples.
- ``SampledLatency`` (``--latency-file F``): draws with replacement from measured latencies, per
  request from ``--seed``: the per-run ``total`` times `lightwam bench --json` writes
  (``samples_ms.total``; bench times PolicyPipeline.predict, what a node's worker runs per
  request), or a plain JSON list of milliseconds.

Random draws use Python's ``random.Random(seed).random()``, whose sequence the standard library
keeps the same across Python versions (numpy's Generator makes no such promise), mapped to a
value by plain arithmetic (not ``choice`` or ``uniform``, whose algorithms may change).
"""

from __future__ import annotations

import json
import math
import random
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from lightwam_ros.replay.options import ReplayError

MERGE_NOTE = "chunks are merged at the first control tick at or after request + latency"
SAMPLE_STAGE = "total"  # the bench stage that is a request's latency (PolicyPipeline.predict, end to end)


def _ns(ms: float) -> int:
    return round(ms * 1e6)


class LatencyModel(ABC):
    """One simulated latency per inference request (``next_ns``), in request order. Abstract: the
    models are FixedLatency, UniformLatency and SampledLatency below."""

    kind: str

    @abstractmethod
    def next_ns(self) -> int:
        """The next request's latency."""

    @property
    @abstractmethod
    def nominal_ms(self) -> float:
        """The typical latency: what a warm-up would measure (primes the scheduler's pacing)."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """report.json's ``inference.latency_model``: the kind and its parameters."""


class FixedLatency(LatencyModel):
    kind = "fixed"

    def __init__(self, latency_ms: float) -> None:
        if not (latency_ms >= 0 and math.isfinite(latency_ms)):
            raise ReplayError(f"--latency must be >= 0 ms, got {latency_ms}")
        self.latency_ms = float(latency_ms)
        self._ns = _ns(latency_ms)

    @classmethod
    def of_ns(cls, latency_ns: int) -> FixedLatency:
        """Exactly ``latency_ns`` (no round trip through milliseconds)."""
        model = cls(latency_ns / 1e6)
        model._ns = int(latency_ns)
        return model

    def next_ns(self) -> int:
        return self._ns

    @property
    def nominal_ms(self) -> float:
        return self.latency_ms

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "latency_ms": self.latency_ms, "note": MERGE_NOTE}


class UniformLatency(LatencyModel):
    """Uniform on [mean - jitter, mean + jitter] (see the module doc for why uniform)."""

    kind = "uniform"

    def __init__(self, mean_ms: float, jitter_ms: float, seed: int = 0) -> None:
        if not (mean_ms >= 0 and math.isfinite(mean_ms)):
            raise ReplayError(f"--latency must be >= 0 ms, got {mean_ms}")
        if not (0 <= jitter_ms <= mean_ms):
            raise ReplayError(f"--latency-jitter must be in [0, --latency] ms (a latency is never negative), "
                              f"got {jitter_ms} with --latency {mean_ms}")
        self.mean_ms, self.jitter_ms, self.seed = float(mean_ms), float(jitter_ms), int(seed)
        self._rng = random.Random(self.seed)

    def next_ns(self) -> int:
        return _ns(self.mean_ms - self.jitter_ms + 2.0 * self.jitter_ms * self._rng.random())

    @property
    def nominal_ms(self) -> float:
        return self.mean_ms

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "mean_ms": self.mean_ms, "jitter_ms": self.jitter_ms,
                "range_ms": [self.mean_ms - self.jitter_ms, self.mean_ms + self.jitter_ms], "seed": self.seed,
                "note": f"{MERGE_NOTE}; one draw per request, in request order"}


class SampledLatency(LatencyModel):
    """Measured latencies, drawn uniformly with replacement (a bootstrap of the measurement)."""

    kind = "samples"

    def __init__(self, samples_ms: list[float], seed: int = 0, source: str = "") -> None:
        if not samples_ms:
            raise ReplayError(f"--latency-file {source}: no latency samples")
        bad = [x for x in samples_ms if not (isinstance(x, (int, float)) and math.isfinite(x) and x >= 0)]
        if bad:
            raise ReplayError(f"--latency-file {source}: latencies must be finite numbers >= 0 ms, got {bad[:3]}")
        self.samples_ms = [float(x) for x in samples_ms]
        self.seed, self.source = int(seed), source
        self._rng = random.Random(self.seed)

    def next_ns(self) -> int:
        n = len(self.samples_ms)
        return _ns(self.samples_ms[min(int(self._rng.random() * n), n - 1)])

    @property
    def nominal_ms(self) -> float:
        ordered = sorted(self.samples_ms)
        return ordered[len(ordered) // 2]

    def describe(self) -> dict[str, Any]:
        a = sorted(self.samples_ms)

        def pct(q: float) -> float:  # nearest rank: a value that was measured
            return a[min(len(a) - 1, max(0, math.ceil(q * len(a)) - 1))]

        return {"kind": self.kind, "file": self.source, "samples": len(a),
                "samples_ms": {"min": a[0], "p50": pct(0.5), "p90": pct(0.9), "max": a[-1],
                               "mean": round(sum(a) / len(a), 3)},
                "seed": self.seed, "note": f"{MERGE_NOTE}; one draw per request, in request order, "
                                           "uniformly from the samples with replacement"}


def read_samples(path: Path) -> list[float]:
    """Latencies (ms) from `lightwam bench --json`'s file (``samples_ms.total``) or a JSON list."""
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise ReplayError(f"--latency-file {path}: cannot read it ({exc.strerror or exc})") from exc
    except ValueError as exc:
        raise ReplayError(f"--latency-file {path}: not JSON ({exc})") from exc
    if isinstance(data, list):
        return data
    if isinstance(data, dict):
        samples = data.get("samples_ms")
        if isinstance(samples, dict) and isinstance(samples.get(SAMPLE_STAGE), list):
            return samples[SAMPLE_STAGE]
        if "stages" in data:
            raise ReplayError(f"--latency-file {path}: a `lightwam bench --json` result without per-run "
                              f"samples (samples_ms.{SAMPLE_STAGE}); run `lightwam bench --json` again")
    raise ReplayError(f"--latency-file {path}: expected `lightwam bench --json` output "
                      f"(samples_ms.{SAMPLE_STAGE}) or a JSON list of latencies in ms")


def latency_model(latency_ms: float = 0.0, jitter_ms: float = 0.0, latency_file: Path | None = None,
                  seed: int = 0) -> LatencyModel:
    """The model the replay options ask for: samples from a file, uniform with a jitter, else fixed."""
    if latency_file is not None:
        return SampledLatency(read_samples(latency_file), seed, str(latency_file))
    if jitter_ms > 0:
        return UniformLatency(latency_ms, jitter_ms, seed)
    return FixedLatency(latency_ms)
