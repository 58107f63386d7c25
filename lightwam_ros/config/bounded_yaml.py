"""YAML files from users (robot profiles, bag metadata) read with bounded work and memory.

API
- ``read_bounded_yaml(path, max_bytes=, max_depth=, max_nodes=, what=) -> document`` -- raises
  ``YamlLimitError`` with one line naming the file (and the key path where there is one).
- ``YamlLimitError`` -- a ValueError; callers turn it into their own error type (ConfigError,
  BagError) with the message unchanged.
- ``shown_keys(keys) -> str`` -- a key path as the errors quote it.

Why: YAML can describe far more than it spells out. An alias to a mapping repeats it, so a few
lines of nested aliases stand for billions of nodes once anything walks them (flattening a profile
does); an alias inside the node it names makes an endless structure; deep nesting overflows the
recursive composer and constructor (RecursionError); a non-UTF-8 byte, an impossible date or a
5000-digit integer raise UnicodeDecodeError or ValueError from deep inside PyYAML, naming neither
the file nor the key. Here the file is read as at most ``max_bytes`` of UTF-8, and its event stream
is checked -- the parser keeps its own stack, so a 100000-level file is refused at level
``max_depth + 1`` without reading on, and an alias's expansion is known from the size of the node
its anchor closed over -- before the document is built. Every failure is one YamlLimitError.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

SHOWN_KEYS = 8  # levels of a key path quoted in an error
SHOWN_CHARS = 40  # characters of one key or value quoted in an error


class YamlLimitError(ValueError):
    """A YAML file that is not read: too large, not UTF-8, beyond a bound, or not valid YAML."""


def _cut(text: str, limit: int = SHOWN_CHARS) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def shown_keys(keys: list[str]) -> str:
    """A key path for an error message: its first SHOWN_KEYS levels, each cut to SHOWN_CHARS."""
    parts = [_cut(k) for k in keys[:SHOWN_KEYS]]
    return ".".join(parts) + (f"... ({len(keys)} levels)" if len(keys) > SHOWN_KEYS else "")


def _yaml_problem(exc: Exception) -> str:
    """A YAML error on one line: 'line L, column C: problem' (PyYAML's own text spans lines)."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or getattr(exc, "context", None) or str(exc)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return " ".join(f"{where}{problem}".split())


class _Walk:
    """The event stream of a YAML text with the key path at each event (for checks and errors)."""

    def __init__(self, text: str, loader: Any) -> None:
        self.text, self.loader = text, loader
        # per open collection: [anchor, expanded count at its start, is mapping, next is a key, key]
        self.stack: list[list[Any]] = []

    def keys(self) -> list[str]:
        return [str(f[4]) if f[2] else "[]" for f in self.stack]

    def __iter__(self) -> Any:
        import yaml

        stack = self.stack
        for event in yaml.parse(self.text, Loader=self.loader):
            if isinstance(event, yaml.NodeEvent) and stack and stack[-1][2]:  # a mapping alternates key, value
                frame = stack[-1]
                if frame[3]:
                    frame[4] = event.value if isinstance(event, yaml.ScalarEvent) else "?"
                frame[3] = not frame[3]
            if isinstance(event, yaml.CollectionStartEvent):
                stack.append([event.anchor, 0, isinstance(event, yaml.MappingStartEvent), True, "?"])
            yield event
            if isinstance(event, yaml.CollectionEndEvent):
                stack.pop()

    def key_at(self, line: int, column: int) -> str | None:
        """The key path of the node that starts at (line, column), 0-based; None if none does."""
        for event in self:
            mark = event.start_mark
            if mark is not None and (mark.line, mark.column) == (line, column):
                return shown_keys(self.keys()) or None
        return None


def _check_events(text: str, loader: Any, max_depth: int, max_nodes: int) -> None:
    """Refuse, from the event stream alone, nesting beyond max_depth, an alias inside the node it
    names (a cycle), an undefined alias, and more than max_nodes nodes once aliases are expanded."""
    import yaml

    walk = _Walk(text, loader)
    # anchor -> expanded nodes of the node it names, None while that node is open (the latest
    # definition of a reused name counts, as for the composer)
    sizes: dict[str, int | None] = {}
    expanded = 0

    def count(n: int, what: str) -> None:
        nonlocal expanded
        expanded += n
        if expanded > max_nodes:
            raise YamlLimitError(f"expands to more than {max_nodes} YAML nodes ({what} at "
                                 f"{shown_keys(walk.keys()) or 'the top level'})")

    for event in walk:
        if isinstance(event, yaml.AliasEvent):
            anchor = _cut(event.anchor or "")
            if event.anchor in sizes and sizes[event.anchor] is None:
                raise YamlLimitError(f"alias *{anchor} at {shown_keys(walk.keys())} is inside the node "
                                     f"&{anchor} it refers to (an endless structure)")
            if event.anchor not in sizes:
                raise YamlLimitError(f"alias *{anchor} at {shown_keys(walk.keys())} refers to no anchor "
                                     "defined before it")
            count(sizes[event.anchor] or 0, f"alias *{anchor}")
        elif isinstance(event, yaml.ScalarEvent):
            count(1, "a value")
            if event.anchor is not None:
                sizes[event.anchor] = 1
        elif isinstance(event, yaml.CollectionStartEvent):
            count(1, "a collection")
            walk.stack[-1][1] = expanded - 1
            if event.anchor is not None:
                sizes[event.anchor] = None
            if len(walk.stack) > max_depth:
                raise YamlLimitError(f"key {shown_keys(walk.keys())} nests deeper than {max_depth} levels")
        elif isinstance(event, yaml.CollectionEndEvent):
            anchor, start = walk.stack[-1][:2]
            if anchor is not None:
                sizes[anchor] = expanded - start


@functools.lru_cache(maxsize=1)
def _loader() -> Any:
    """The safe loader (libyaml's parser where PyYAML has it: the same types, far faster) whose
    value conversions fail as YAML errors at the value's position, not as a bare ValueError."""
    import yaml

    base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    class BoundedLoader(base):  # type: ignore[misc, valid-type]
        def construct_object(self, node: Any, deep: bool = False) -> Any:
            try:
                return super().construct_object(node, deep)
            except (ValueError, TypeError, OverflowError) as e:
                shown = _cut(node.value if isinstance(node.value, str) else str(node.tag))
                why = _cut(" ".join(str(e).split()), 100)
                raise yaml.constructor.ConstructorError(
                    None, None, f"{shown!r} does not convert ({why})", node.start_mark) from None

    return BoundedLoader


def read_bounded_yaml(path: Path, *, max_bytes: int, max_depth: int, max_nodes: int, what: str) -> Any:
    """The YAML document in ``path``, read within the bounds; ``what`` says, in the too-large error,
    how large such a file normally is."""
    import yaml

    try:
        with path.open("rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as e:
        raise YamlLimitError(f"{path} cannot be read: {e.strerror or e}") from None
    if len(data) > max_bytes:
        raise YamlLimitError(f"{path} is larger than {max_bytes} bytes; {what}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise YamlLimitError(f"{path} is not UTF-8 text (line {line}: byte 0x{data[e.start]:02x})") from None
    loader = _loader()
    try:
        _check_events(text, loader, max_depth, max_nodes)
        return yaml.load(text, Loader=loader)  # a safe loader (see _loader)
    except YamlLimitError as e:
        raise YamlLimitError(f"{path}: {e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        key = None
        if isinstance(e, yaml.constructor.ConstructorError) and mark is not None:
            key = _Walk(text, loader).key_at(mark.line, mark.column)  # the events checked out: this ends
        raise YamlLimitError(f"{path} is not valid YAML: {_yaml_problem(e)}"
                             + (f" (key {key})" if key else "")) from None
