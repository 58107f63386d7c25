"""Two network namespaces joined by a veth pair: two "hosts" on one machine, for DDS over a real link.

Why namespaces: processes in different network namespaces share no network interface, not even
loopback, so DDS between them must go through the link's UDP path, as between a robot and a GPU host
-- nothing is reached through the machine's own interfaces. The link's addresses (10.213.x.0/30, a
private range) exist only inside the two namespaces, which are created per run under unique names and
deleted again (deleting a namespace destroys its end of the link, and with it the pair). Needs root
(CAP_SYS_ADMIN and CAP_NET_ADMIN); `netns_unavailable()` says why not, so a test can skip with that
reason.

Every `ip` call has a timeout: a wedged call fails the test instead of hanging it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

IP_TIMEOUT_S = 10.0
SUBNET_PREFIX = "10.213"  # the link is SUBNET_PREFIX.<x>.0/30: .1 robot, .2 policy


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=IP_TIMEOUT_S)


def netns_unavailable() -> str | None:
    """None when this process can create network namespaces, else the reason it cannot (tried once)."""
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    probe = f"lw_probe_{os.getpid()}_{secrets.token_hex(3)}"
    try:
        added = _ip("netns", "add", probe)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`ip netns add` failed: {exc}"
    if added.returncode != 0:
        return (f"`ip netns add` failed ({added.stderr.strip() or added.returncode}): creating network "
                "namespaces needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN)")
    _ip("netns", "del", probe)
    return None


@dataclass(frozen=True)
class VethLink:
    """The two namespaces and the two ends of the link between them."""

    robot_ns: str
    policy_ns: str
    robot_addr: str
    policy_addr: str
    robot_if: str = "lw_robot"
    policy_if: str = "lw_policy"

    def prefix(self, ns: str) -> list[str]:
        """argv that runs a command inside namespace ``ns``."""
        return ["ip", "netns", "exec", ns]

    def counters(self, ns: str, ifname: str) -> dict[str, int]:
        """rx/tx bytes and packets of ``ifname`` as the kernel counts them inside ``ns``
        (/sys/class/net is the namespace's own only when read from inside it)."""
        names = ("rx_bytes", "tx_bytes", "rx_packets", "tx_packets", "rx_dropped", "tx_dropped")
        paths = [f"/sys/class/net/{ifname}/statistics/{n}" for n in names]
        out = subprocess.run([*self.prefix(ns), "cat", *paths], capture_output=True, text=True,
                             timeout=IP_TIMEOUT_S, check=True).stdout.split()
        return dict(zip(names, (int(v) for v in out)))


def _check(result: subprocess.CompletedProcess[str], what: str) -> None:
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed: {result.stderr.strip()}")


@contextlib.contextmanager
def veth_link(tag: str = "lw") -> Iterator[VethLink]:
    """Create two namespaces (loopback up in each) joined by an up veth pair with a /30 between them;
    delete both on exit, also when the body or the setup failed part-way."""
    token = f"{os.getpid()}_{secrets.token_hex(3)}"
    x = secrets.randbelow(256)
    link = VethLink(robot_ns=f"{tag}_{token}_robot", policy_ns=f"{tag}_{token}_policy",
                    robot_addr=f"{SUBNET_PREFIX}.{x}.1", policy_addr=f"{SUBNET_PREFIX}.{x}.2")
    created: list[str] = []
    try:
        for ns in (link.robot_ns, link.policy_ns):
            _check(_ip("netns", "add", ns), f"ip netns add {ns}")
            created.append(ns)
        # both ends are created inside their namespaces: the machine's own namespace never holds them
        _check(_ip("link", "add", link.robot_if, "netns", link.robot_ns, "type", "veth",
                   "peer", "name", link.policy_if, "netns", link.policy_ns), "ip link add (veth pair)")
        for ns, ifname, addr in ((link.robot_ns, link.robot_if, link.robot_addr),
                                 (link.policy_ns, link.policy_if, link.policy_addr)):
            _check(_ip("-n", ns, "addr", "add", f"{addr}/30", "dev", ifname), f"address {addr} in {ns}")
            _check(_ip("-n", ns, "link", "set", "lo", "up"), f"lo up in {ns}")
            _check(_ip("-n", ns, "link", "set", ifname, "up"), f"{ifname} up in {ns}")
        yield link
    finally:
        for ns in created:
            _ip("netns", "del", ns)
