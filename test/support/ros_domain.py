"""A ROS_DOMAIN_ID of our own, shared by the test suite (conftest.py) and the benchmarks.

One free domain per process, claimed with an flock on a file under the temp dir, so parallel runs on
one machine (other checkouts, CI, a benchmark next to the tests) never see each other's topics. The
lock is held until the process exits.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from pathlib import Path

# Domain ids usable with the default port mapping on Linux are 0..101; 0 is everyone's default.
DOMAIN_RANGE = range(1, 102)
_lock_file = None  # kept open (and locked) for the life of the process


def claim_domain_id() -> int:
    global _lock_file
    lock_dir = Path(tempfile.gettempdir()) / "lightwam_ros_test_domains"
    lock_dir.mkdir(exist_ok=True)
    start = os.getpid() % len(DOMAIN_RANGE)
    for i in range(len(DOMAIN_RANGE)):
        domain = DOMAIN_RANGE[(start + i) % len(DOMAIN_RANGE)]
        f = open(lock_dir / f"{domain}.lock", "w")  # noqa: SIM115 - held open on purpose
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            continue
        _lock_file = f
        return domain
    raise RuntimeError(f"no free ROS_DOMAIN_ID in {DOMAIN_RANGE} (locks under {lock_dir})")
