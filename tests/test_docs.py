"""The docs: the command reference is what --help says, and the site builds (strict: no broken
link, no stale API page) into pages that load nothing from the network."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from charnn.cli.reference import markdown

ROOT = Path(__file__).resolve().parents[1]


def test_the_reference_is_what_help_says():
    assert (ROOT / "docs" / "reference.md").read_text(encoding="utf-8") == markdown(), \
        "docs/reference.md is stale: run make docs (python -m charnn.cli.reference > docs/reference.md)"


def test_the_reference_lists_every_flag_of_every_command():
    from charnn.cli.main import build_parser

    text = markdown()
    parser = build_parser()
    for name in ("train", "sample", "serve"):
        help_text = subprocess.run([sys.executable, "-m", "charnn", name, "--help"], capture_output=True,
                                   text=True, check=True).stdout
        flags = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]+)", help_text)) - {"--help"}
        section = text.split(f"## `charnn {name}`")[1].split("\n## ")[0]
        assert flags and all(f in section for f in flags), sorted(f for f in flags if f not in section)
    assert parser.prog == "charnn"


@pytest.mark.slow
def test_the_site_builds_strict_and_offline(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    mkdocs = Path(sys.executable).parent / "mkdocs"
    if not mkdocs.exists():
        mkdocs = shutil.which("mkdocs")
    r = subprocess.run([str(mkdocs), "build", "--strict", "--site-dir", str(tmp_path / "site")], cwd=ROOT,
                       capture_output=True, text=True, env={"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr[-3000:]
    pages = list((tmp_path / "site").rglob("*.html"))
    assert len(pages) >= 12
    api = (tmp_path / "site" / "api.html").read_text(encoding="utf-8")
    assert 'id="charnn.api.Model.sample"' in api and 'id="charnn.api.train"' in api  # pages from docstrings
    for page in pages:
        loads = re.findall(r"(?:src=|url\()[\"']?((?:https?:)?//[^\"')]+)", page.read_text(encoding="utf-8"))
        assert loads == [], (page.name, loads[:3])
