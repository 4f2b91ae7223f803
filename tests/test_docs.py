"""The documentation site (``mkdocs.yml``, ``docs/``) builds with warnings as errors.

The API reference is generated from the docstrings, so a docstring that griffe cannot
match with its signature (a parameter documented but missing, say) fails this test with
the file and line in the message.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mkdocs")

ROOT = Path(__file__).resolve().parents[1]


def test_docs_build_strict(tmp_path: Path) -> None:
    site = tmp_path / "site"
    cmd = [sys.executable, "-m", "mkdocs", "build", "--strict"]
    cmd += ["-f", str(ROOT / "mkdocs.yml"), "-d", str(site)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    problems = [ln for ln in proc.stderr.splitlines() if not ln.startswith("INFO")]
    assert proc.returncode == 0, "mkdocs build --strict failed:\n" + "\n".join(problems)

    for page in ["index.html", "RESULTS/index.html", "guide/lifted/index.html"]:
        assert (site / page).is_file(), page
    api = sorted((site / "api").glob("*/index.html"))
    assert len(api) >= 12, [p.parent.name for p in api]
    for page in api:
        text = page.read_text(encoding="utf-8")
        # reStructuredText roles are rewritten into math and links (docs/griffe_rst.py)
        left = re.findall(r":(?:math|func|class|meth|mod|data|attr):`", text)
        assert not left, f"{page.parent.name}: unconverted roles {left[:3]}"
