"""The documentation site builds with MkDocs in strict mode: a warning (a broken link, a docstring
mkdocstrings cannot read, a page left out of the navigation) fails the build."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_docs_site_builds_with_warnings_as_errors(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    site = tmp_path / "site"
    for page in ("api/secagg/index.html", "api/rfa/index.html", "protocol/index.html"):
        assert (site / page).is_file(), page
    api = (site / "api/secagg/index.html").read_text()
    # every module of the package has its section in the API reference
    modules = [p.stem for p in (ROOT / "secagg").glob("*.py") if not p.stem.startswith("_")]
    assert all(f'id="secagg.{m}"' in api for m in modules), [m for m in modules if f'id="secagg.{m}"' not in api]
