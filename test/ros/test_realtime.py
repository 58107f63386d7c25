"""apply_realtime: SCHED_FIFO on the calling thread only, the GIL switch interval, and a warning
(never an exception) naming the parameter and the fix when the privilege is missing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from lightwam_ros.ros.realtime import apply_realtime

REPO = Path(__file__).resolve().parents[2]
linux_only = pytest.mark.skipif(not hasattr(os, "sched_setscheduler"), reason="SCHED_FIFO needs Linux")


def _can_fifo() -> bool:
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    except OSError:
        return False
    os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    return True


def test_off_changes_nothing() -> None:
    before = sys.getswitchinterval()
    assert apply_realtime(0, None) == "real-time: off (normal scheduling, python's switch interval)"
    assert apply_realtime(0, 0.0).startswith("real-time: off")
    assert sys.getswitchinterval() == before
    if hasattr(os, "sched_getscheduler"):
        assert os.sched_getscheduler(0) == os.SCHED_OTHER


def test_switch_interval_is_set() -> None:
    before = sys.getswitchinterval()
    try:
        assert apply_realtime(0, 0.002) == "real-time: GIL switch interval 2 ms"
        assert sys.getswitchinterval() == pytest.approx(0.002)
    finally:
        sys.setswitchinterval(before)


@linux_only
def test_priority_outside_the_range_warns() -> None:
    msg = apply_realtime(120, None)
    assert msg.startswith("warning: control.realtime_priority 120 is outside 1..99")
    assert os.sched_getscheduler(0) == os.SCHED_OTHER


@linux_only
@pytest.mark.skipif(not _can_fifo(), reason="this process may not use SCHED_FIFO (not root, no rtprio)")
def test_fifo_applies_to_the_calling_thread_only() -> None:
    seen: dict[str, object] = {}

    def control_thread() -> None:
        try:
            seen["msg"] = apply_realtime(5, None)
            seen["policy"] = os.sched_getscheduler(0)
            seen["priority"] = os.sched_getparam(0).sched_priority
            seen["tid"] = threading.get_native_id()
        finally:
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))

    t = threading.Thread(target=control_thread)
    t.start()
    t.join(10)
    assert seen["msg"] == f"real-time: SCHED_FIFO priority 5 on thread {seen['tid']}"
    assert (seen["policy"], seen["priority"]) == (os.SCHED_FIFO, 5)
    assert os.sched_getscheduler(0) == os.SCHED_OTHER, "the other threads keep normal scheduling"


@linux_only
def test_without_privilege_a_warning_names_the_parameter_and_the_fix() -> None:
    """In a child with RLIMIT_RTPRIO 0 and (as root) CAP_SYS_NICE dropped from its capability sets."""
    prefix: list[str] = []
    if os.getuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root and setpriv (util-linux) is missing: cannot drop CAP_SYS_NICE")
        prefix = [setpriv, "--bounding-set", "-sys_nice", "--inh-caps", "-sys_nice"]
    code = ("import os, resource, sys; resource.setrlimit(resource.RLIMIT_RTPRIO, (0, 0)); "
            "from lightwam_ros.ros.realtime import apply_realtime; print(apply_realtime(10, 0.001)); "
            "print(os.sched_getscheduler(0) == os.SCHED_OTHER, sys.getswitchinterval())")
    out = subprocess.run([*prefix, sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr
    msg, state = out.stdout.strip().splitlines()
    assert msg.startswith("warning: control.realtime_priority 10: no permission for SCHED_FIFO"), msg
    assert "limits.conf" in msg and "CAP_SYS_NICE" in msg
    assert msg.endswith("(GIL switch interval 1 ms applied)"), "what could be applied still is"
    assert state == "True 0.001"
