"""The bundle's one error type, in a module of its own.

Both the bundle format and the low-level safetensors reader raise it, and the text contexts read
from a bundle do too; kept apart from format.py so the reader below it needs nothing above it.
"""

from __future__ import annotations


class BundleError(RuntimeError):
    """A bundle is missing, corrupt, or disagrees with itself; the message names the file and key."""
