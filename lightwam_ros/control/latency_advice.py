"""Is inference fast enough for the chunk length, and if not, what to change (pure: numbers in, text out).

Used by the node at startup (after the warm-up), by its /diagnostics inference status and by
`lightwam demo` when it picks its settings, so the three say the same thing in the same words.

The time model is the scheduler's (scheduler.py): a chunk's step k is the target for
observation stamp + k * dt, only the first ``steps`` steps are used, so a chunk is usable until
stamp + (steps - 1) * dt. With inference latency L (request to chunk), frame age a and k requests
in flight spaced L / k apart:

- L + a > (steps - 1) * dt: the chunk's last usable step has elapsed when it arrives; every chunk
  expires and the robot never moves (``Verdict.EXPIRE``).
- (1 + 1/k) * L + a > (steps - 1) * dt (``ChunkScheduler.keeps_up`` is False): each chunk covers
  (steps - 1) * dt - L - a of every L / k, and the robot holds in between (``Verdict.GAPS``);
  ``following`` is that fraction of control ticks in steady state.
- otherwise the command is gapless (``Verdict.OK``).

The control rate does not enter: a chunk's span is its steps times the bundle's action period,
whatever the control timer's rate, so lowering control_rate_hz never makes a slow model keep up.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from lightwam_ros.control.scheduler import ChunkScheduler


class Verdict(str, Enum):
    OK = "ok"  # gapless
    GAPS = "gaps"  # chunks arrive in time to be used, but the robot holds between them
    EXPIRE = "expire"  # every chunk arrives after its last usable step: the robot never moves


@dataclass(frozen=True)
class ChunkTiming:
    """How long a chunk lasts and how many inferences may overlap."""

    steps: int  # steps of a chunk that are used (chunk.steps_limit(trained_steps))
    dt_ns: int  # the bundle's action period
    max_inflight: int = 1  # inference requests in flight at once (after the backend's cap)
    frame_age_ns: int = 0  # age of the observation when the request starts

    def __post_init__(self) -> None:
        if self.steps < 1 or self.dt_ns <= 0 or self.max_inflight < 1 or self.frame_age_ns < 0:
            raise ValueError(f"invalid chunk timing {self}")

    @property
    def span_ns(self) -> int:
        """steps * dt: what "a 24-step chunk lasts 480 ms" means."""
        return self.steps * self.dt_ns

    @property
    def usable_ns(self) -> int:
        """Observation stamp to the chunk's last usable step."""
        return (self.steps - 1) * self.dt_ns

    @property
    def gapless_budget_ns(self) -> int:
        """The largest latency with a gapless command: k * (usable - age) / (k + 1)."""
        k = self.max_inflight
        return max(0, k * (self.usable_ns - self.frame_age_ns) // (k + 1))

    def following(self, latency_ns: int) -> float:
        """Steady-state fraction of control ticks that follow the policy with this latency."""
        if latency_ns <= 0:
            return 1.0
        cover = self.usable_ns - latency_ns - self.frame_age_ns  # what a chunk has left at arrival
        return min(1.0, max(0.0, self.max_inflight * cover / latency_ns))


@dataclass(frozen=True)
class LatencyAdvice:
    verdict: Verdict
    latency_ms: float
    following: float  # expected fraction of control ticks following the policy (steady state)
    message: str  # one line for a log or a diagnostics status
    remedies: tuple[str, ...] = ()

    @property
    def too_slow(self) -> bool:
        return self.verdict is not Verdict.OK


def _hz(dt_ns: int) -> str:
    return f"{1e9 / dt_ns:.4g} Hz"


def remedies(backend: str, device: str, timing: ChunkTiming | None = None,
             trained_steps: int | None = None) -> tuple[str, ...]:
    """What can make inference fit, most effective first, for this backend/device (and chunk, if known)."""
    out: list[str] = []
    on_cpu = str(device).startswith("cpu")
    if on_cpu and backend == "torch":
        out.append("backend: onnx (ONNX Runtime is usually several times faster on a CPU; "
                   "`lightwam export-onnx` adds the export to the bundle)")
    if on_cpu:
        out.append("a GPU (device: cuda)")
        out.append("fewer busy processes on this CPU (and OMP_NUM_THREADS=1 for torch when cores are shared)")
    if timing is not None and trained_steps is not None and timing.steps < trained_steps:
        out.append(f"chunk.execute_steps: 0 (use all {trained_steps} trained steps, not {timing.steps})")
    if not on_cpu and (timing is None or timing.max_inflight == 1):
        out.append("chunk.max_inflight: 2 (overlap two requests on the GPU)")
    return tuple(out)


def advise(latency_ms: float, timing: ChunkTiming, backend: str = "torch", device: str = "cpu",
           trained_steps: int | None = None) -> LatencyAdvice:
    """The verdict for one inference latency (ms, request to chunk) and the message that says it."""
    latency_ns = int(round(latency_ms * 1e6))
    chunk = f"a {timing.steps}-step chunk ({timing.span_ns / 1e6:.0f} ms at {_hz(timing.dt_ns)})"
    inflight = f"{timing.max_inflight} request{'s' if timing.max_inflight > 1 else ''} in flight"
    budget_ms = timing.gapless_budget_ns / 1e6
    if ChunkScheduler.keeps_up(latency_ns, timing.steps, timing.dt_ns, timing.frame_age_ns, timing.max_inflight):
        return LatencyAdvice(Verdict.OK, latency_ms, 1.0,
                             f"inference {latency_ms:.0f} ms fits {chunk} with {inflight} "
                             f"(gapless up to {budget_ms:.0f} ms)")
    fixes = remedies(backend, device, timing, trained_steps)
    use = ("; try " + " / ".join(fixes)) if fixes else ""
    if latency_ns + timing.frame_age_ns > timing.usable_ns:
        return LatencyAdvice(Verdict.EXPIRE, latency_ms, 0.0,
                             f"inference {latency_ms:.0f} ms > {timing.usable_ns / 1e6:.0f} ms usable in {chunk}: "
                             f"every chunk will expire on arrival and the robot will hold still; too slow for "
                             f"a gapless command below {budget_ms:.0f} ms{use}", fixes)
    following = timing.following(latency_ns)
    return LatencyAdvice(Verdict.GAPS, latency_ms, following,
                         f"inference {latency_ms:.0f} ms is too slow for a gapless command with {chunk} and "
                         f"{inflight} (needs <= {budget_ms:.0f} ms): the robot will follow the policy on about "
                         f"{100 * following:.0f} % of control ticks and hold in between{use}", fixes)


def startup_advice(warm_ms: float, steps: int, dt_ns: int, max_inflight: int, backend: str, device: str,
                   trained_steps: int | None = None) -> LatencyAdvice | None:
    """The node's verdict after its warm-up (None when the warm-up gave no latency)."""
    if not (warm_ms == warm_ms and warm_ms > 0) or steps < 1 or dt_ns <= 0:  # NaN or nothing measured
        return None
    return advise(warm_ms, ChunkTiming(steps, dt_ns, max(1, max_inflight)), backend, device, trained_steps)
