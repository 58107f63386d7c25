"""The package layering of lightwam_ros as an executable contract.

Read from the source (ast), so every import counts -- at module level and inside functions, where
most of this code defers its heavy imports (torch, the ROS client library) and where an import
circle hides until the function runs. Imports under ``if TYPE_CHECKING:`` never run: they count
for the layering (a type is a dependency too) but not for circles. Imports by name at run time
(importlib.import_module: the CLI's subcommands, the inference backends) are not seen.

Three rules:
- no import circle between modules: a circle makes the import order decide whether a name exists
  yet, and one module cannot be used or tested without the other;
- each package imports only from the packages below it (ALLOWED): what a change can break stays
  predictable, and the lower layers can be used without the higher ones (the controller and the
  model without ROS, the replay without the CLI);
- control imports neither the ROS client library, ROS messages nor torch, not even through what it
  imports: the control logic is tested, and reusable, as plain Python without a ROS installation
  or a GPU stack.

A known violation, to be fixed, is listed in KNOWN_CYCLES / KNOWN_VIOLATIONS with the reason;
its test is an xfail(strict=True), so fixing it fails the run until the entry is removed.

Module names in the tables are relative to lightwam_ros: shorter, and test/conftest.py marks a test
`ros` when its source names the node or replay modules in full, while this one touches no ROS and
belongs in `make test-unit`.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "lightwam_ros"
SOURCE = REPO_ROOT / PACKAGE

# Layer -> the layers (or single modules, for a narrower grant) it may import from; its own layer is
# always allowed. A layer is lightwam_ros.<name> (a sub-package, or a top-level module: types, cli).
# Read bottom to top.
BELOW_ROS = {"types", "config", "model", "bundle", "text", "inference", "control"}
ALLOWED: dict[str, set[str]] = {
    "types": set(),  # the plain data every layer passes around
    "config": {"types"},  # parameters and profiles: plain Python, no model, no ROS
    "model": set(),  # the torch model: knows nothing of bundles, config or ROS
    # A bundle's on-disk format: the model's config and weights, and the prompt template its text
    # cache is keyed by (text.prompts, text's lowest module: text itself reads bundles).
    "bundle": {"types", "config", "model", "text.prompts"},
    "text": {"types", "config", "model", "bundle"},  # instruction embeddings, cached in a bundle
    "inference": {"types", "config", "model", "bundle", "text"},  # a bundle -> a runnable policy
    # Sync, scheduling, safety, the controller: plain Python. The inference pool (threads, no torch)
    # is the one thing it may take from inference; today it uses a protocol instead.
    "control": {"types", "config", "inference.pool"},
    "ros": BELOW_ROS,  # the node: control and inference on DDS
    "replay": BELOW_ROS | {"ros"},  # bags through the node
    "demo": BELOW_ROS | {"ros", "replay"},  # a synthetic robot, replayed
    "commands": BELOW_ROS | {"ros", "replay", "demo"},  # the `lightwam` subcommands
    "cli": BELOW_ROS | {"ros", "replay", "demo", "commands"},
}

# Top-level imports control may not make anywhere in what it loads (prefixes and suffixes): the ROS
# client libraries (rcl...), torch, launch, and the interface packages (messages, services).
CONTROL_FORBIDDEN_PREFIXES = ("rcl", "torch", "launch")
CONTROL_FORBIDDEN_SUFFIXES = ("_msgs", "_srvs", "_interfaces")

# Circles being removed right now: (modules of the circle, who fixes it and how).
KNOWN_CYCLES: list[tuple[set[str], str]] = []

# Imports that break ALLOWED, to be removed: (importer, imported, why it is still there).
KNOWN_VIOLATIONS: list[tuple[str, str, str]] = []


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    line: int
    in_function: bool
    type_checking: bool

    def where(self) -> str:
        path = SOURCE.parent / module_path(self.importer)
        rel = path.relative_to(REPO_ROOT)
        scope = "in a function" if self.in_function else "module level"
        return f"{rel}:{self.line} ({scope}{', TYPE_CHECKING' if self.type_checking else ''})"


def module_path(module: str) -> Path:
    path = Path(*module.split("."))
    return path / "__init__.py" if (SOURCE.parent / path).is_dir() else path.with_suffix(".py")


def all_modules() -> dict[str, Path]:
    out = {}
    for path in sorted(SOURCE.rglob("*.py")):
        parts = path.relative_to(SOURCE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


MODULES = all_modules()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _walk(node: ast.AST, in_function: bool = False,
          type_checking: bool = False) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool, bool]]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child, in_function, type_checking
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            for stmt in child.body:
                yield from _walk(ast.Module(body=[stmt], type_ignores=[]), in_function, True)
            for stmt in child.orelse:
                yield from _walk(ast.Module(body=[stmt], type_ignores=[]), in_function, type_checking)
        else:
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            yield from _walk(child, inner, type_checking)


def imports_of(module: str) -> tuple[list[Import], list[tuple[str, int, bool]]]:
    """(imports of lightwam_ros modules, (other top-level name, line, in a function) of the rest)."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    ours, others = [], []
    for node, in_function, type_checking in _walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import name`: the submodule pkg.name when there is one, else pkg itself
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        for name in dict.fromkeys(names):
            if name == PACKAGE or name.startswith(PACKAGE + "."):
                target = name
                while target not in MODULES:  # `import pkg.mod.attr` style: the nearest module
                    target = target.rpartition(".")[0]
                if target != module:
                    ours.append(Import(module, target, node.lineno, in_function, type_checking))
            else:
                others.append((name.split(".")[0], node.lineno, in_function))
    return ours, others


IMPORTS = {m: imports_of(m) for m in MODULES}
EDGES = [imp for m in MODULES for imp in IMPORTS[m][0]]


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "<root>"


def allowed(imp: Import) -> bool:
    src, dst = layer(imp.importer), layer(imp.imported)
    if src == dst or dst == "<root>":
        return True
    rel = imp.imported.split(".", 1)[1]
    return any(rel == grant or rel.startswith(grant + ".") for grant in ALLOWED.get(src, set()))


# --- circles ----------------------------------------------------------------------------------------
def strongly_connected(edges: list[Import]) -> list[frozenset[str]]:
    """Tarjan: the module sets with a path from each to each (size > 1: circles)."""
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for e in edges:
        graph[e.importer].add(e.imported)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[frozenset[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(frozenset(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def short(module: str) -> str:
    return module.removeprefix(PACKAGE + ".")


def full(name: str) -> str:
    return f"{PACKAGE}.{name}"


def describe_cycle(component: frozenset[str], edges: list[Import]) -> str:
    """A shortest circle through the component, then every import inside it with file and line (a
    component can hold several circles; breaking it means removing enough of these)."""
    inside = [e for e in edges if e.importer in component and e.imported in component]
    start = min(component)
    paths = {start: [start]}
    queue, chain = [start], [start]
    while queue and len(chain) == 1:  # breadth first from start until an import leads back to it
        v = queue.pop(0)
        for e in inside:
            if e.importer == v and e.imported == start:
                chain = paths[v] + [start]
                break
            if e.importer == v and e.imported not in paths:
                paths[e.imported] = paths[v] + [e.imported]
                queue.append(e.imported)
    lines = [f"circle {' -> '.join(short(m) for m in chain)}; the imports inside it:"]
    lines += [f"    {short(e.importer)} -> {short(e.imported)}   [{e.where()}]"
              for e in sorted(inside, key=lambda e: (e.importer, e.imported, e.line))]
    return "\n".join(lines)


RUNTIME_EDGES = [e for e in EDGES if not e.type_checking]
CYCLES = strongly_connected(RUNTIME_EDGES)


def test_the_scan_sees_the_package() -> None:
    # A parser that silently finds nothing would pass every test below.
    assert len(MODULES) > 40 and len(EDGES) > 100, (len(MODULES), len(EDGES))
    assert any(e.in_function for e in EDGES), "no function-level import seen"


def test_no_import_cycles() -> None:
    known = {frozenset(map(full, c)) for c, _ in KNOWN_CYCLES}
    new = [c for c in CYCLES if c not in known]
    assert not new, "import circles between lightwam_ros modules:\n" + "\n".join(
        describe_cycle(c, RUNTIME_EDGES) for c in new)


@pytest.mark.parametrize("cycle", [
    pytest.param(frozenset(map(full, c)), id="<->".join(sorted(c)),
                 marks=pytest.mark.xfail(strict=True, reason=why)) for c, why in KNOWN_CYCLES])
def test_known_cycle_is_gone(cycle: frozenset[str]) -> None:
    assert cycle not in CYCLES, describe_cycle(cycle, RUNTIME_EDGES)


# --- layers -----------------------------------------------------------------------------------------
def test_every_layer_is_in_the_table() -> None:
    layers = {layer(m) for m in MODULES} - {"<root>"}
    assert layers <= set(ALLOWED), f"layers without a rule: {sorted(layers - set(ALLOWED))}"
    for src, grants in ALLOWED.items():
        for grant in grants:
            assert any(m == full(grant) or m.startswith(full(grant) + ".") for m in MODULES), (
                f"ALLOWED[{src!r}] names {grant!r}, which does not exist")


def test_layers_import_only_downwards() -> None:
    known = {(full(a), full(b)) for a, b, _ in KNOWN_VIOLATIONS}
    bad = [e for e in EDGES if not allowed(e) and (e.importer, e.imported) not in known]
    assert not bad, "imports against the layering (test/test_layering.py ALLOWED):\n" + "\n".join(
        f"  {layer(e.importer)} -> {layer(e.imported)}: {short(e.importer)} imports {short(e.imported)}"
        f"   [{e.where()}]" for e in bad)


@pytest.mark.parametrize("importer,imported", [
    pytest.param(full(a), full(b), id=f"{a}->{b}", marks=pytest.mark.xfail(strict=True, reason=why))
    for a, b, why in KNOWN_VIOLATIONS])
def test_known_violation_is_gone(importer: str, imported: str) -> None:
    assert not any(e.importer == importer and e.imported == imported for e in EDGES)


# --- control without ROS and torch ------------------------------------------------------------------
CONTROL = sorted(m for m in MODULES if layer(m) == "control")


def control_closure() -> set[str]:
    """control's modules and every lightwam_ros module they import, at any level, transitively."""
    seen, todo = set(), list(CONTROL)
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo += [e.imported for e in IMPORTS[m][0] if not e.type_checking]
    return seen


def _forbidden(top: str) -> bool:
    return top.startswith(CONTROL_FORBIDDEN_PREFIXES) or top.endswith(CONTROL_FORBIDDEN_SUFFIXES)


def test_control_imports_no_ros_and_no_torch() -> None:
    bad = [f"  {short(m)} imports {top}   [{module_path(m)}:{line}{', in a function' if fn else ''}]"
           for m in sorted(control_closure()) for top, line, fn in IMPORTS[m][1] if _forbidden(top)]
    assert not bad, "control (or what it imports) imports ROS or torch:\n" + "\n".join(bad)


def test_control_imports_where_ros_and_torch_cannot() -> None:
    # The same, executed: every control module imported with the ROS libraries, messages and torch made
    # unimportable (catches what the scan cannot see, such as an import by name).
    script = textwrap.dedent(f"""
        import importlib, sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                top = name.split(".")[0]
                if top.startswith({CONTROL_FORBIDDEN_PREFIXES!r}) or top.endswith({CONTROL_FORBIDDEN_SUFFIXES!r}):
                    raise ImportError(f"control must not import {{name}}")
                return None
        sys.meta_path.insert(0, Block())
        for name in {CONTROL!r}:
            importlib.import_module(name)
    """)
    run = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
