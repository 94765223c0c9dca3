"""Griffe extension for the API reference: ``Example:`` sections render as examples.

The project's docstrings head their doctests ``Example:`` (singular). Griffe's Google parser
knows ``Examples:`` as the section whose ``>>>`` lines become highlighted code; the singular is
read as an admonition of Markdown text, where ``>>>`` starts a block quote and ``x["image"]``
a reference link. Renaming the heading here keeps the source as it is (and doctest-compatible).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_EXAMPLE = re.compile(r"^(\s*)Example:\s*$", re.MULTILINE)


class ExampleSections(griffe.Extension):
    """Rewrites ``Example:`` section headings to ``Examples:`` in every docstring it loads."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _EXAMPLE.sub(r"\1Examples:", obj.docstring.value)
