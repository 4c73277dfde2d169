"""The seams between packages: torch only where a model runs, the environment read in one
place."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ("vigil", "webapp", "tasks", "inference", "schedules", "store", "notify")
SETTINGS_MODULE = ROOT / "vigil" / "settings.py"

# What the web process, beat and the digest/scheduler workers import: none runs a model.
NO_MODEL = """
import sys
import webapp
webapp.create_app({"TESTING": True})
import celery_config, tasks.app, tasks.digest, tasks.scheduling, tasks.deep, tasks.lite
from tasks.app import app
app.loader.import_default_modules()
loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
print(len(loaded), loaded[:3])
"""


@pytest.mark.e2e
def test_processes_that_run_no_model_never_import_torch():
    done = subprocess.run(
        [sys.executable, "-c", NO_MODEL], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("0 "), done.stdout


def environment_reads(path: Path) -> list[int]:
    """Lines of ``path`` that read the process environment (os.environ, os.getenv)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv"):
            if isinstance(node.value, ast.Name) and node.value.id == "os":
                lines.append(node.lineno)
        if isinstance(node, ast.ImportFrom) and node.module == "os":
            if any(alias.name in ("environ", "getenv") for alias in node.names):
                lines.append(node.lineno)
    return lines


@pytest.mark.unit
def test_only_the_settings_module_reads_the_environment():
    files = [ROOT / "celery_config.py"]
    for package in PRODUCT:
        files += sorted((ROOT / package).rglob("*.py"))
    readers = {
        str(path.relative_to(ROOT)): lines
        for path in files
        if path != SETTINGS_MODULE and (lines := environment_reads(path))
    }
    assert readers == {}
    assert environment_reads(SETTINGS_MODULE)  # the one place that does
