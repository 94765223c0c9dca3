"""The documentation's examples are tests: every ``>>>`` example in ``src/spatialrec`` and every
Python code block of README.md and ``docs/*.md`` runs here, so a renamed argument or a changed
shape breaks the suite instead of silently breaking the docs.

- **Docstrings**: one test per docstring with examples (``doctest.DocTestFinder`` over every
  module of the package, so a new module is picked up without a list to keep). Output must match
  exactly (``...`` allowed). A module that needs an optional dependency missing here is skipped
  with the name of that dependency; any other import failure fails.
- **Markdown**: one test per fenced block whose info string starts with ``python`` (id
  ``path:line``); the blocks of one file run in order in one namespace (later blocks use names
  defined earlier), in a temporary working directory of their own. Other languages (bash,
  plain text) are not run.
- **Examples that cannot run here** (they need a data set, a GPU, or minutes) say why in their
  source, and are reported as skipped with that reason; they are still compiled, so a syntax
  error fails. In a docstring, the first example line is ``>>> # skip: <reason>``; in Markdown,
  the line before the fence is ``<!-- skip: <reason> -->``. A bare ``# doctest: +SKIP`` is
  refused: it would skip silently.
"""

from __future__ import annotations

import doctest
import importlib
import io
import os
import re
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import pytest
import torch

# Collecting the docstrings imports every module, spatialrec.ops.triton (hence triton) included:
# on a machine without a GPU, switch on Triton's interpreter first, as tests/ops/conftest.py does,
# in case this file is collected before that directory (the switch works only before the import).
if not torch.cuda.is_available() and "triton" not in sys.modules:
    os.environ.setdefault("TRITON_INTERPRET", "1")

import spatialrec  # noqa: E402
from spatialrec.models import unregister_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIR = Path(spatialrec.__file__).resolve().parent

# Optional dependencies (top-level import names) and the extra that installs each: a module whose
# import fails for lack of one of these is skipped, any other import error is a failure.
OPTIONAL = {
    "PIL": "data",
    "nibabel": "data",
    "tqdm": "data",
    "onnx": "deploy",
    "onnxscript": "deploy",
    "onnxruntime": "deploy",
    "triton": "triton",
    "monai": "interop",
    "segmentation_models_pytorch": "interop",
    "torchvision": "interop",
    "nnunetv2": "nnunet",
    "dynamic_network_architectures": "nnunet",
}

SKIP_DOCTEST = re.compile(r"^\s*>>>\s*#\s*skip:\s*(?P<reason>\S.*?)\s*$", re.MULTILINE)
SKIP_HTML = re.compile(r"^<!--\s*skip:\s*(?P<reason>.*\S)\s*-->$")


def _skip_reason_missing_optional(exc: ImportError) -> Optional[str]:
    """The skip reason if ``exc`` is a missing optional dependency, else None (a real failure)."""
    # Modules re-raise a missing dependency as an ImportError naming the extra: follow the chain.
    cause: Optional[BaseException] = exc
    while cause is not None:
        name = (getattr(cause, "name", None) or "").split(".")[0]
        if isinstance(cause, ModuleNotFoundError) and name in OPTIONAL:
            return f"needs {name} (pip install 'spatialrec[{OPTIONAL[name]}]')"
        cause = cause.__cause__ or cause.__context__
    return None


@pytest.fixture(autouse=True)
def _forget_registered_models() -> Any:
    """Examples may register models (docs/models.md does): unregister them afterwards, so the
    registry the other tests see does not depend on which examples ran before."""
    before = set(spatialrec.list_models())
    yield
    for name in set(spatialrec.list_models()) - before:
        unregister_model(name)


# --- docstring examples ----------------------------------------------------------------------


def _module_names() -> list[str]:
    """Every module of the package, from its files (importing nothing)."""
    names = []
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names.append(".".join(parts))
    return names


@dataclass
class _DocCase:
    """One docstring's examples, or one module whose import failed or was skipped."""

    id: str
    test: Optional[doctest.DocTest] = None
    skip: Optional[str] = None
    error: Optional[str] = None


def _doc_cases() -> list[_DocCase]:
    finder = doctest.DocTestFinder(exclude_empty=True)
    cases = []
    for name in _module_names():
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            reason = _skip_reason_missing_optional(exc)
            if reason is not None:
                cases.append(_DocCase(name, skip=reason))
                continue
            cases.append(_DocCase(name, error=traceback.format_exc()))
            continue
        except Exception:  # a broken module must fail its test, not the collection of every other
            cases.append(_DocCase(name, error=traceback.format_exc()))
            continue
        for test in sorted(finder.find(module, name), key=lambda t: t.name):
            if test.examples:
                cases.append(_DocCase(test.name, test=test))
    return cases


DOC_CASES = _doc_cases()


class _Runner(doctest.DocTestRunner):
    """A doctest runner that tells a missing optional dependency (a skip) from a failure."""

    missing: Optional[str] = None

    def report_unexpected_exception(self, out: Any, test: Any, example: Any, exc_info: Any) -> None:
        exc = exc_info[1]
        if isinstance(exc, ImportError) and self.missing is None:
            self.missing = _skip_reason_missing_optional(exc)
        super().report_unexpected_exception(out, test, example, exc_info)


@pytest.mark.parametrize("case", DOC_CASES, ids=[c.id for c in DOC_CASES])
def test_docstring_examples(case: _DocCase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The docstring's examples print what they say, run from an empty working directory."""
    if case.error is not None:
        pytest.fail(f"importing {case.id} failed:\n{case.error}", pytrace=False)
    if case.skip is not None:
        pytest.skip(case.skip)
    test = case.test
    assert test is not None
    where = f"{test.filename}:{(test.lineno or 0) + 1}"
    for example in test.examples:
        # Syntax-check every example, also those of a skipped docstring.
        compile(example.source, where, "single")
        if example.options.get(doctest.SKIP):
            pytest.fail(
                f"{where}: '# doctest: +SKIP' skips silently; make the example run, or start "
                "the docstring's examples with '>>> # skip: <reason>'",
                pytrace=False,
            )
    # doctest drops comment-only examples, so the reason is read from the docstring's text.
    skip = SKIP_DOCTEST.search(test.docstring or "")
    if skip is not None:
        pytest.skip(f"{where}: {skip.group('reason')}")
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    out = io.StringIO()
    runner = _Runner(optionflags=doctest.ELLIPSIS, verbose=False)
    # A fresh copy of the module's namespace, as doctest itself gives each docstring.
    test.globs = dict(test.globs)
    result = runner.run(test, out=out.write, clear_globs=False)
    if runner.missing is not None:
        pytest.skip(f"{where}: {runner.missing}")
    if result.failed:
        pytest.fail(f"{where}:\n{out.getvalue()}", pytrace=False)


# --- Markdown code blocks --------------------------------------------------------------------


def _markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@dataclass
class _Block:
    """One fenced Python block of a Markdown file."""

    path: Path
    line: int  # 1-based line of the first code line
    source: str
    skip: Optional[str]

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT).as_posix()}:{self.line}"

    def code(self) -> Any:
        # Leading newlines put tracebacks on the Markdown file's own line numbers.
        return compile("\n" * (self.line - 1) + self.source, str(self.path), "exec")


FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")


def _blocks(path: Path) -> list[_Block]:
    """The fenced blocks of ``path`` whose info string's first word is ``python`` or ``py``."""
    lines = path.read_text().splitlines()
    blocks = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if m is None:
            i += 1
            continue
        fence, indent = m.group("fence"), len(m.group("indent"))
        info = m.group("info").strip().split()
        end = i + 1
        # A closing fence is the fence's character, at least as many times, and nothing else.
        closing = re.compile(re.escape(fence[0]) + "{%d,}" % len(fence))
        while end < len(lines) and not closing.fullmatch(lines[end].strip()):
            end += 1
        if info and info[0] in ("python", "py"):
            before = next((lines[k].strip() for k in range(i - 1, -1, -1) if lines[k].strip()), "")
            skip = SKIP_HTML.match(before)
            body = "\n".join(line[indent:] for line in lines[i + 1 : end]) + "\n"
            blocks.append(_Block(path, i + 2, body, skip.group("reason") if skip else None))
        i = end + 1
    return blocks


BLOCKS = [b for p in _markdown_files() for b in _blocks(p)]


@dataclass
class _FileRun:
    """The state shared by the blocks of one Markdown file: namespace, directory, progress."""

    directory: Path
    namespace: dict[str, Any] = field(default_factory=lambda: {"__name__": "__docs__"})
    done: int = 0  # blocks of the file executed (or passed over) so far, in order


_RUNS: dict[Path, _FileRun] = {}


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_markdown_block(
    block: _Block, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The block runs after the file's earlier blocks, in their namespace."""
    code = block.code()  # a syntax error fails even a skipped block
    if block.skip is not None:
        pytest.skip(f"{block.id}: {block.skip}")
    run = _RUNS.get(block.path)
    if run is None:
        run = _RUNS[block.path] = _FileRun(tmp_path_factory.mktemp(block.path.stem))
        torch.manual_seed(0)
    monkeypatch.chdir(run.directory)
    blocks = [b for b in BLOCKS if b.path == block.path]
    index = blocks.index(block)
    # When this block is run alone (pytest path::id), run the file's earlier blocks first.
    for earlier in blocks[run.done : index]:
        if earlier.skip is None:
            try:
                exec(earlier.code(), run.namespace)
            except Exception as exc:
                pytest.fail(f"the earlier block {earlier.id} failed: {exc!r}", pytrace=False)
    run.done = max(run.done, index + 1)
    try:
        exec(code, run.namespace)
    except ImportError as exc:
        reason = _skip_reason_missing_optional(exc)
        if reason is None:
            raise
        pytest.skip(f"{block.id}: {reason}")


# --- the machinery itself ----------------------------------------------------------------------


def test_blocks_are_found_with_their_lines_and_skip_reasons(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "# Title\n"
        "```python\n"
        "a = 1\n"
        "```\n"
        "```bash\n"
        "echo not python\n"
        "```\n"
        "<!-- skip: needs the LiTS data set -->\n"
        "\n"
        "```python\n"
        "load('lits')\n"
        "```\n"
        "- a list item:\n"
        "  ```py\n"
        "  b = a + 1\n"
        "  ```\n"
        "````text\n"
        "```python\n"
        "a fenced block shown inside a text block is text\n"
        "```\n"
        "````\n"
        "```python\n"
        "c = 3\n"
        "```\n"
    )
    blocks = _blocks(page)
    assert [(b.line, b.source, b.skip) for b in blocks] == [
        (3, "a = 1\n", None),
        (11, "load('lits')\n", "needs the LiTS data set"),
        (15, "b = a + 1\n", None),
        (23, "c = 3\n", None),
    ]
    # Tracebacks point at the Markdown file's own lines.
    with pytest.raises(NameError) as info:
        exec(blocks[1].code(), {})
    assert info.traceback[-1].lineno + 1 == 11


def test_docstring_skip_reason_is_read_from_the_text() -> None:
    doc = "Example:\n    >>> # skip: needs a GPU\n    >>> f()\n"
    match = SKIP_DOCTEST.search(doc)
    assert match is not None and match.group("reason") == "needs a GPU"
    assert SKIP_DOCTEST.search("Example:\n    >>> f()  # skip: not a marker\n") is None


def test_only_missing_optional_dependencies_skip() -> None:
    assert _skip_reason_missing_optional(ModuleNotFoundError("x", name="nibabel.nifti1")) == (
        "needs nibabel (pip install 'spatialrec[data]')"
    )
    # A module that re-raises the missing dependency with advice is still a skip.
    try:
        try:
            raise ModuleNotFoundError("no onnx", name="onnx")
        except ImportError as err:
            raise ImportError("to_onnx needs the deploy extra") from err
    except ImportError as chained:
        assert _skip_reason_missing_optional(chained) == "needs onnx (pip install 'spatialrec[deploy]')"
    # Anything else is a failure: a missing non-optional module, a name missing from a module.
    assert _skip_reason_missing_optional(ModuleNotFoundError("x", name="spatialrec.nope")) is None
    assert _skip_reason_missing_optional(ImportError("cannot import name 'f' from 'spatialrec'")) is None


def test_every_markdown_file_and_module_is_covered() -> None:
    """The lists the tests are built from are not empty by accident (a moved folder, a bad glob)."""
    files = {b.path.name for b in BLOCKS}
    assert {"README.md", "layers.md", "models.md", "kernels.md"} <= files
    ids = {c.id for c in DOC_CASES}
    assert "spatialrec.layers.sdn.SpatialDependencyLayer" in ids
    assert any(i.startswith("spatialrec.ops.") for i in ids)
