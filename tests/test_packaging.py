"""Packaging and repository hygiene: what pip installs matches requirements.txt; the docs exist."""
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_pyproject_dependencies_match_requirements():
    tomllib = pytest.importorskip("tomllib")
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    lines = [line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    assert sorted(declared) == sorted(line for line in lines if line)


def test_docs_are_in_the_repository_and_linked():
    readme = (ROOT / "README.md").read_text()
    for page in ("api.md", "cli.md", "pipeline-format.md"):
        assert (ROOT / "docs" / page).is_file(), page
        assert f"docs/{page}" in readme, page
