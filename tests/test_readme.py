"""README.md holds exactly two set-up commands, and CI runs the second one verbatim."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _setup_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]


def test_readme_has_exactly_two_setup_commands():
    commands = _setup_commands()
    assert len(commands) == 2, commands
    assert all(c.startswith("pip install -e ") for c in commands), commands
    assert "pytest" in commands[1]


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert _setup_commands()[1] in [line.strip() for line in ci]
    assert any(line.strip().endswith("pip install torch==2.13.0") for line in ci)


def test_main_job_is_the_installed_demo_command():
    # The main command runs what the install provides (the console script), so the same works
    # from a wheel without the repository.
    main = _setup_commands()[0]
    assert main.endswith("&& spatialrec demo"), main
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'spatialrec = "spatialrec.cli:main"' in pyproject


def test_readme_has_no_relative_links():
    # A package index shows README.md outside the repository, where relative links break.
    text = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(([^)]+)\)", text) + re.findall(r"(?:src|href)=\"([^\"]+)\"", text)
    assert all(re.match(r"https?://", t) for t in targets), targets
