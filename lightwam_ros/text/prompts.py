"""The prompt exactly as Light-WAM was trained on it (docs/model.md, "Text contexts (umT5)").

The template, the tokenizer-side cleaning and the context key decide which umT5 context an
instruction gets; the bundle, the text contexts and the umT5 encoder must all agree on them, so
they are defined here once. This module imports nothing else from the package, so every layer,
the bundle format included, can use it without an import circle.

Cleaning (official `HuggingfaceTokenizer(clean="whitespace")`): `html.unescape` twice, strip, every run of
Unicode whitespace -> one space, strip. The official code would call `ftfy.fix_text` first, but ftfy is
not among the reference environment's pinned dependencies, so its import fell back to an identity
function: the released models were trained WITHOUT ftfy, and this module does not apply it either.
The whitespace class is the Unicode White_Space set that the `regex` package's `\\s` matches (the
reference env has `regex` through transformers); Python's `re` would also match U+001C..U+001F.
"""

from __future__ import annotations

import hashlib
import html
import re

# robot_video_dataset.py DEFAULT_PROMPT: ASCII apostrophe, one space after the colon, raw {task}.
PROMPT_TEMPLATE = "A video recorded from a robot's point of view executing the following instruction: {task}"
TEXT_LEN = 128  # tokenizer_max_len = context_len of every Light-WAM config

# `regex`'s \s (Unicode White_Space): what the reference collapsed.
_WHITESPACE = re.compile(r"[\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+")


def format_prompt(instruction: str, template: str = PROMPT_TEMPLATE) -> str:
    """The templated prompt; the instruction is inserted raw (not stripped), as in training."""
    return template.format(task=instruction)


def clean_prompt(text: str) -> str:
    """The tokenizer-side cleaning of the official text encoder (no ftfy, see module docstring)."""
    text = html.unescape(html.unescape(text)).strip()
    return _WHITESPACE.sub(" ", text).strip()


def prompt_key(instruction: str, template: str = PROMPT_TEMPLATE) -> str:
    """sha256 hex of the UTF-8 templated prompt, before cleaning: the official cache file stem."""
    return hashlib.sha256(format_prompt(instruction, template).encode("utf-8")).hexdigest()
