"""InstructionGate: which instruction the policy runs on, and whether the robot may move for it.

Why a gate: the instruction is the one input a person types, so it is where a typo, a paste of a
whole document or a text the bundle was never trained on arrives -- and each of those must hold
the robot with an error that says what to do, never run the model on a wrong context. The
decisions are here; what the bundle knows (precomputed contexts, an online text encoder) is asked
through ``InstructionSource`` (text/lookup.py implements it for a loaded pipeline).

Rules:
- instruction.default applies only until the first instruction arrives on the topic; an empty
  instruction on the topic means "stop" (hold) and does not bring the default back;
- a text that breaks the input bounds (instruction_problem: too long, control characters) holds,
  and the error names the topic;
- otherwise the source decides: known -> usable; being encoded online -> hold quietly (ask again
  next tick); unknown or failed -> hold with the source's error.
The answer is cached per text object (the status is asked at every control tick); only a text
still being encoded is asked again.
"""

from __future__ import annotations

from typing import Any, Protocol

from lightwam_ros.config import instruction_problem

SHOWN_CHARS = 120  # characters of an instruction quoted in logs and diagnostics


class InstructionSource(Protocol):
    """What the bundle (and an online encoder) know about instructions."""

    def status(self, text: str, quoted: str) -> tuple[bool, str, bool]:
        """(usable, why not, final) for a non-empty text within the input bounds; ``quoted`` is
        the text as errors quote it (clipped); not final: ask again later (an online encode is
        running)."""

    def diagnostics(self) -> dict[str, Any]:
        """Values added to the control diagnostics (online encoder state), or {}."""


def shown(text: str) -> str:
    """An instruction as quoted in logs: repr, at most SHOWN_CHARS characters."""
    return repr(text) if len(text) <= SHOWN_CHARS else f"{text[:SHOWN_CHARS]!r}... ({len(text)} characters)"


def clipped(text: str) -> str:
    """An instruction as reported in diagnostics: at most SHOWN_CHARS characters."""
    return text if len(text) <= SHOWN_CHARS else f"{text[:SHOWN_CHARS]}... ({len(text)} characters)"


class InstructionGate:
    """The current instruction and its cached verdict (see the module doc)."""

    def __init__(self, default: str, topic: str, source: InstructionSource) -> None:
        self.default = default  # instruction.default (a runtime parameter)
        self._topic = topic  # resolved topic name, quoted in errors
        self._source = source
        self._received: str | None = None  # last text on the topic (None: nothing yet)
        self._cached: tuple[str, bool, str] | None = None  # (text, usable, why not)

    @property
    def current(self) -> str:
        return self._received if self._received is not None else self.default

    def receive(self, text: str) -> tuple[str, str]:
        """A new instruction from the topic. Returns (log level, message) to report: ("info",
        ...) when usable or an empty "stop", ("error", why) when it cannot be used, ("", "") when it
        is being encoded (diagnostics report that)."""
        self._received = text
        ok, why = self.status()
        if ok:
            return "info", f"instruction: {shown(text)}"
        if why:
            return "error", why
        if not text:
            return "info", "empty instruction: holding until the next one"
        return "", ""

    def status(self) -> tuple[bool, str]:
        """(usable, why not) for the current instruction; "" when there is nothing to report."""
        text = self.current
        cached = self._cached
        if cached is not None and cached[0] is text:
            return cached[1], cached[2]
        ok, why, final = self._decide(text)
        self._cached = (text, ok, why) if final else None
        return ok, why

    def _decide(self, text: str) -> tuple[bool, str, bool]:
        if not text:
            return False, "", True
        problem = instruction_problem(text)
        if problem:
            return False, f"instruction on '{self._topic}' {problem}; holding", True
        return self._source.status(text, shown(text))

    def forget_received(self) -> None:
        """Back to instruction.default (a fresh runtime)."""
        self._received = None
        self._cached = None

    def diagnostics(self) -> dict[str, Any]:
        return self._source.diagnostics()
