"""Check the built distributions in a folder: python .ci/check_dist.py DIST_DIR

The wheel holds the package with its py.typed marker, the spatialrec command and no tests; the
sdist holds what a packager or a reader needs beside the code (docs, examples, tests, changelog).
Exit status 1 with the list of what is wrong.
"""

from __future__ import annotations

import sys
import tarfile
import zipfile
from pathlib import Path


def main(folder: str) -> int:
    dist = Path(folder)
    wheels, sdists = sorted(dist.glob("spatialrec-*.whl")), sorted(dist.glob("spatialrec-*.tar.gz"))
    if len(wheels) != 1 or len(sdists) != 1:
        print(f"expected one wheel and one sdist in {dist}, found {wheels + sdists}")
        return 1
    problems = []
    names = zipfile.ZipFile(wheels[0]).namelist()
    # linestep.cpp: the native CPU line kernel is built from its source on the user's machine.
    for needed in ("spatialrec/__init__.py", "spatialrec/py.typed", "spatialrec/cli/__init__.py", "spatialrec/__main__.py",
                   "spatialrec/ops/native/linestep.cpp"):
        if needed not in names:
            problems.append(f"wheel lacks {needed}")
    if any(n.startswith(("tests/", "examples/", "docs/")) or "/tests/" in n for n in names):
        problems.append("wheel holds tests, examples or docs")
    entry = next((n for n in names if n.endswith(".dist-info/entry_points.txt")), None)
    if entry is None or "spatialrec = spatialrec.cli:main" not in zipfile.ZipFile(wheels[0]).read(entry).decode():
        problems.append("wheel lacks the spatialrec console script")
    with tarfile.open(sdists[0]) as tar:
        members = {m.split("/", 1)[1] for m in tar.getnames() if "/" in m}
    for needed in ("docs/index.md", "docs/api/index.md", "examples/holistic_demo.py", "tests/cli/test_cli.py",
                   "CHANGELOG.md", "README.md", "LICENSE", "mkdocs.yml", "src/spatialrec/py.typed"):  # fmt: skip
        if needed not in members:
            problems.append(f"sdist lacks {needed}")
    if any("__pycache__" in m for m in members):
        problems.append("sdist holds __pycache__")
    for p in problems:
        print(p)
    print(f"{wheels[0].name}: {len(names)} files; {sdists[0].name}: {len(members)} files; "
          + ("OK" if not problems else f"{len(problems)} problem(s)"))  # fmt: skip
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
