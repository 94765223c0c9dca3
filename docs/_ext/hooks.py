"""MkDocs hook: links from a page to files outside ``docs/`` become plain text on the site.

In the repository (and the sdist) the guide pages link to benchmark results, examples and
scripts beside ``docs/`` (``../benchmarks/results/holistic.md``); those files are not part of
the site, so such a link would be broken there and fail the strict build. On the site the link
is replaced by its text and the file's path in the repository; links between pages stay links,
and a broken one still fails the build.
"""

from __future__ import annotations

import posixpath
import re
from typing import Any

_LINK = re.compile(r"(?<!!)\[(?P<text>[^\]]+)\]\((?P<target>[^)\s]+)\)")
_IMAGE = re.compile(r"!\[(?P<text>[^\]]*)\]\((?P<target>[^)\s]+)\)")


def _outside(page_path: str, target: str) -> str | None:
    """The repository path of ``target`` when it leaves ``docs/``, else ``None``."""
    if "://" in target or target.startswith(("#", "mailto:", "/")):
        return None
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(page_path), target.split("#")[0]))
    return resolved[3:] if resolved.startswith("../") else None


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    src = page.file.src_uri

    def link(m: re.Match[str]) -> str:
        path = _outside(src, m.group("target"))
        return m.group(0) if path is None else f"{m.group('text')} (`{path}` in the repository)"

    def image(m: re.Match[str]) -> str:
        path = _outside(src, m.group("target"))
        return m.group(0) if path is None else f"*{m.group('text') or 'figure'}: `{path}` in the repository*"

    return _LINK.sub(link, _IMAGE.sub(image, markdown))
