"""Run test code in a child process with capped memory and time, and read back what it reports.

Why a child: a loader that expands an alias bomb or allocates what a lying length field asks for
would take the test process (and a shared machine) with it. In the child, the address space is
capped a fixed amount above what it uses once its imports are done (``cap_memory``), so the same
cap holds whether or not torch or rclpy were imported, and an unbounded allocation ends in a
MemoryError the child reports instead of in swapping; ``run_bounded`` kills a child that runs past
its time.

Protocol: the child script imports this module (test/support is put on its PYTHONPATH), calls
``cap_memory`` after its imports, and prints one JSON object per line with ``report``; the parent
gets the list of those objects.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

SUPPORT = Path(__file__).resolve().parent
REPO_ROOT = SUPPORT.parents[1]


def cap_memory(headroom_mib: int) -> None:
    """Cap this process's address space at its current size plus ``headroom_mib``."""
    with open("/proc/self/status") as f:
        vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    limit = vm + headroom_mib * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def report(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def run_bounded(script: str, args: Sequence[str] = (), timeout_s: float = 120.0) -> list[dict[str, Any]]:
    """Run ``script`` (Python source) in a child; returns its reported objects. A child that exits
    with an error or prints nothing fails the calling test with its stderr."""
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(SUPPORT), str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", script, *args], env=env, capture_output=True, text=True,
                          timeout=timeout_s)
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise AssertionError(f"bounded child failed (rc {proc.returncode}); stdout tail:\n{proc.stdout[-1500:]}\n"
                             f"stderr tail:\n{proc.stderr[-3000:]}")
    return lines
