"""BundleInstructions: the InstructionSource of a loaded policy -- its precomputed contexts and,
when text.encoder is umt5, the online encoder for instructions the bundle does not carry.

Why separate from the gate (control/instruction.py): the gate decides when the robot may move;
this says only what the bundle and the encoder know, and it is the part that touches the text
stack (torch for online encoding), which the control package must not import.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterable
from typing import Any

from lightwam_ros.text.contexts import UnknownInstructionError
from lightwam_ros.text.online import TextStatus


class BundleInstructions:
    """Known instructions of ``contexts`` (a container of instruction texts), plus an optional
    online encoder (``request`` / ``error`` / ``diagnostics``, as text's OnlineTextEncoder)."""

    def __init__(self, contexts: Container[str], known: Callable[[], Iterable[str]], where: str,
                 encoder: Any = None) -> None:
        self._contexts = contexts
        self._known = known  # called only for the error message (the list can be long)
        self._where = where  # "bundle <path>", named in the unknown-instruction error
        self.encoder = encoder

    def status(self, text: str, quoted: str) -> tuple[bool, str, bool]:
        if text in self._contexts:
            return True, "", True
        if self.encoder is not None:
            status = self.encoder.request(text)
            if status is TextStatus.READY:
                return True, "", True
            if status is TextStatus.FAILED:
                return False, f"instruction {quoted}: encoding failed: {self.encoder.error(text)}; holding", True
            return False, "", False  # ENCODING: hold quietly, diagnostics report it; ask again next tick
        return False, str(UnknownInstructionError(quoted, self._known(), self._where)) + "\nHolding.", True

    def diagnostics(self) -> dict[str, Any]:
        return self.encoder.diagnostics() if self.encoder is not None else {}

    @classmethod
    def of_pipeline(cls, pipeline: Any, encoder: Any = None) -> BundleInstructions:
        """The instructions a PolicyPipeline can run (its contexts; online encoding adds to them)."""
        return cls(pipeline.contexts, lambda: pipeline.known_instructions, f"bundle {pipeline.bundle.path}", encoder)
