"""Real-time scheduling for the control thread: SCHED_FIFO and a short GIL switch interval.

Why: the 50 Hz control tick shares the process with inference threads (torch / ONNX Runtime
kernels, image decoding) and the DDS threads. Two things delay a due tick: the kernel scheduling
another thread on the core, and the GIL, which a running Python thread gives up only every
switch interval (5 ms by default). The perf helper's jitter benchmark
(test/benchmarks/bench_control_jitter.py: 3 x 480x640 cameras at 30 Hz over SHM DDS) measured the
tick period's p99 deviation at 2.76 ms by default and 1.74 ms with SCHED_FIFO on the executor
thread plus ``sys.setswitchinterval(0.001)``.

``apply_realtime`` is called from the thread to promote (the node: inside its first control tick,
which runs on the executor thread). On Linux ``os.sched_setscheduler(0, ...)`` applies to the
calling thread only (pid 0 = the caller's thread id for the kernel), so worker threads keep normal
scheduling and can never starve the control loop. Threads created later by the promoted thread
inherit its policy -- another reason to promote the executor thread only after the inference
workers exist. The switch interval is process-wide.

It never raises: without the privilege the node must still run (a warning names the parameter and
how to grant it), and non-Linux platforms report that SCHED_FIFO is unavailable.
"""

from __future__ import annotations

import os
import sys
import threading

PRIORITY_PARAM = "control.realtime_priority"
SWITCH_PARAM = "control.switch_interval"
GRANT_HINT = ("grant it with a line '<user> - rtprio 99' in /etc/security/limits.conf (log in again), "
              "CAP_SYS_NICE on the process (setcap cap_sys_nice+ep on the python binary, or "
              "AmbientCapabilities=CAP_SYS_NICE in a systemd unit), or --cap-add=SYS_NICE / "
              "--ulimit rtprio=99 for a container")


def apply_realtime(priority: int, switch_interval_s: float | None = None) -> str:
    """Make the calling thread SCHED_FIFO at ``priority`` (1..99; 0 = leave it) and set Python's
    switch interval (seconds; None or 0 = leave it). Returns one human-readable line saying what
    was done; a line starting with "warning:" when something could not be applied. Never raises."""
    parts: list[str] = []
    warnings: list[str] = []
    if switch_interval_s:
        try:
            sys.setswitchinterval(float(switch_interval_s))
            parts.append(f"GIL switch interval {sys.getswitchinterval() * 1e3:g} ms")
        except (ValueError, TypeError) as exc:
            warnings.append(f"{SWITCH_PARAM} {switch_interval_s!r} not applied ({exc})")
    if priority:
        ok, outcome = _set_fifo(int(priority))
        (parts if ok else warnings).append(outcome)
    if warnings:
        done = f" ({'; '.join(parts)} applied)" if parts else ""
        return "warning: " + "; ".join(warnings) + done
    return "real-time: " + ("; ".join(parts) if parts else "off (normal scheduling, python's switch interval)")


def _set_fifo(priority: int) -> tuple[bool, str]:
    """SCHED_FIFO for the calling thread: (applied, what happened)."""
    if not hasattr(os, "sched_setscheduler") or not hasattr(os, "SCHED_FIFO"):
        return False, f"{PRIORITY_PARAM} {priority}: SCHED_FIFO is not available on {sys.platform}; normal scheduling"
    lo, hi = os.sched_get_priority_min(os.SCHED_FIFO), os.sched_get_priority_max(os.SCHED_FIFO)
    if not lo <= priority <= hi:
        return False, f"{PRIORITY_PARAM} {priority} is outside {lo}..{hi}; normal scheduling"
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except PermissionError:
        return False, (f"{PRIORITY_PARAM} {priority}: no permission for SCHED_FIFO (needs rtprio >= {priority} "
                       f"or CAP_SYS_NICE); running with normal scheduling -- {GRANT_HINT}")
    except OSError as exc:  # e.g. EINVAL; in a cgroup v1 cpu controller without an RT budget
        return False, (f"{PRIORITY_PARAM} {priority}: SCHED_FIFO refused ({exc}); running with normal "
                       f"scheduling (a cgroup without an RT budget needs cpu.rt_runtime_us; else {GRANT_HINT})")
    return True, f"SCHED_FIFO priority {priority} on thread {threading.get_native_id()}"
