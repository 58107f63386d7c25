"""Security properties of the package source and the running node.

- No weights are ever unpickled with code: every torch.load in lightwam_ros passes
  weights_only=True, and no module imports pickle (or its dill/cloudpickle/joblib relatives).
- The node opens no network port of its own: every socket the process holds after configure +
  activate is a UDP socket (what the DDS participant uses for discovery and user traffic; Fast DDS
  over UDPv4/SHM opens no TCP). A TCP listener (an HTTP server, a debug port) would fail this.
"""

from __future__ import annotations

import ast
import socket
from pathlib import Path

import psutil
from fault_sim import start

PACKAGE = Path(__file__).resolve().parents[1] / "lightwam_ros"
PICKLERS = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve"}


def _sources() -> list[Path]:
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 20
    return files


def _findings(tree: ast.AST, where: str) -> list[str]:
    """torch.load calls without a literal weights_only=True, and imports of pickle-like modules."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Attribute) and f.attr == "load" and getattr(f.value, "id", "") == "torch":
                kw = {k.arg: k.value for k in node.keywords}
                if not (isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True):
                    out.append(f"{where}:{node.lineno} torch.load without weights_only=True")
        elif isinstance(node, ast.Import):
            out += [f"{where}:{node.lineno} import {a.name}" for a in node.names if a.name.split(".")[0] in PICKLERS]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in PICKLERS:
            out.append(f"{where}:{node.lineno} from {node.module} import")
    return out


def test_torch_load_always_weights_only_and_no_pickle_imports() -> None:
    offenders = [f for path in _sources() for f in _findings(ast.parse(path.read_text(), str(path)), path.name)]
    assert offenders == []
    assert any("weights_only=True" in p.read_text() for p in _sources())  # the loads exist and were checked


def test_the_checker_catches_unsafe_loads_and_pickle_imports() -> None:
    src = ("import pickle\nfrom dill import loads\nimport torch\nx = torch.load('w.pt')\n"
           "y = torch.load('w.pt', weights_only=False)\nz = torch.load('w.pt', weights_only=True)\n")
    found = _findings(ast.parse(src), "t.py")
    assert found == ["t.py:1 import pickle", "t.py:2 from dill import", "t.py:4 torch.load without weights_only=True",
                     "t.py:5 torch.load without weights_only=True"], found


def test_the_node_opens_no_network_port_of_its_own(tiny_bundle) -> None:
    sim = start(tiny_bundle, name="lw_f_ports")
    try:
        sim.run(0.5)
        conns = psutil.Process().net_connections(kind="inet")
        tcp = [c for c in conns if c.type == socket.SOCK_STREAM]
        assert tcp == [], f"TCP sockets in the node process: {tcp}"
        assert all(c.type == socket.SOCK_DGRAM for c in conns)
    finally:
        sim.close()
