"""The distribution: what the wheel holds, the `vigil` command, the locks, `.env.example`."""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from schedules.config import DEFAULT_TIERS, SchedulerConfig, TierConfig
from vigil import cli, settings

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PACKAGES = ("vigil", "webapp", "tasks", "inference", "schedules", "store", "notify", "devservers")
# Files other than Python source that the product reads at run time.
RUNTIME_DATA = (
    "inference/weights/nanodet.json",
    "inference/weights/nanodet.bin",
    "inference/weights/NOTICE",
    *(f"store/migrations/{p.name}" for p in sorted((ROOT / "store/migrations").glob("*.sql"))),
)
ENV_LINE = re.compile(r"^# ([A-Z][A-Z0-9_]*)=(.*)$")
# Left out of the copy the wheel is built from: build output, caches, what is not shipped.
NOT_COPIED = (".git", ".venv", "var", "build", "dist", "*.egg-info", "__pycache__", ".*_cache")
NOT_COPIED += (".hypothesis", "node_modules", "tests", "docs", "demo", "bench", "tools")
LOCKS = {
    "runtime": ROOT / "requirements/runtime.txt",
    "demo": ROOT / "requirements/demo.txt",
    "dev": ROOT / "requirements/dev.txt",
}


# .env.example


def env_example_values() -> dict[str, str]:
    lines = (ROOT / ".env.example").read_text().splitlines()
    matches = [m for m in map(ENV_LINE.match, lines) if m]
    values = {m.group(1): m.group(2) for m in matches}
    assert len(values) == len(matches), "a variable is listed twice"
    return values


def declared_variables() -> set[str]:
    """Every variable Settings reads: its fields', and SchedulerConfig's SCHEDULER_* names."""
    names = {f.metadata["env"] for f in dataclasses.fields(settings.Settings)}
    names.remove("SCHEDULER_*")
    names |= {f"SCHEDULER_{f.name.upper()}" for f in dataclasses.fields(SchedulerConfig)}
    names.remove("SCHEDULER_TIERS")
    for tier in DEFAULT_TIERS:
        for attribute in dataclasses.fields(TierConfig):
            if attribute.name != "name":
                names.add(f"SCHEDULER_TIER_{tier.upper()}_{attribute.name.upper()}")
    return names


def test_env_example_names_exactly_the_variables_settings_declares():
    assert set(env_example_values()) == declared_variables()


def test_env_example_gives_the_defaults_settings_uses():
    written = {name: value for name, value in env_example_values().items() if value}
    assert settings.Settings.from_environ(written) == settings.Settings()


def test_env_example_is_what_vigil_settings_env_prints():
    printed = CliRunner().invoke(cli.main, ["settings", "--env"])
    assert printed.exit_code == 0, printed.output
    assert (ROOT / ".env.example").read_text() == printed.output, (
        "regenerate: vigil settings --env > .env.example"
    )


# The vigil command


def test_vigil_lists_its_commands():
    shown = CliRunner().invoke(cli.main, ["--help"])
    assert shown.exit_code == 0, shown.output
    for command in ("users", "migrate", "detect", "settings"):
        assert re.search(rf"^  {command} ", shown.output, re.M), shown.output


def test_vigil_users_are_the_web_apps_commands():
    shown = CliRunner().invoke(cli.main, ["users", "--help"])
    assert shown.exit_code == 0, shown.output
    for command in ("create", "disable", "enable", "delete"):
        assert re.search(rf"^  {command} ", shown.output, re.M), shown.output


def test_vigil_settings_prints_the_configuration_table():
    printed = CliRunner().invoke(cli.main, ["settings"])
    assert printed.exit_code == 0, printed.output
    assert printed.output == settings.markdown_table()


@pytest.mark.e2e
def test_vigil_starts_without_torch():
    code = "import sys, vigil.cli; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=60).returncode == 0


# The locks


def pins(lock: Path) -> dict[str, str]:
    found = re.findall(r"^([A-Za-z0-9._-]+)==(\S+)", lock.read_text(), re.M)
    return {canonicalize_name(name): version for name, version in found}


def declared(*extras: str) -> list[Requirement]:
    project = PYPROJECT["project"]
    lists = [project["dependencies"], *(project["optional-dependencies"][e] for e in extras)]
    return [Requirement(text) for requirements in lists for text in requirements]


@pytest.mark.parametrize(
    ("lock", "extras"),
    [("runtime", ()), ("demo", ("embedded", "demo")), ("dev", ("embedded", "demo", "dev"))],
)
def test_each_lock_pins_what_pyproject_declares(lock, extras):
    pinned = pins(LOCKS[lock])
    for requirement in declared(*extras):
        version = pinned.get(canonicalize_name(requirement.name))
        assert version is not None, f"{requirement.name} is not in {lock}.txt: make lock"
        assert requirement.specifier.contains(version, prereleases=True), (
            f"{lock}.txt pins {requirement.name}=={version}, pyproject wants {requirement}"
        )


def test_the_locks_agree_and_torch_is_2_13_0():
    runtime, demo, dev = (pins(LOCKS[name]) for name in ("runtime", "demo", "dev"))
    assert {name: demo[name] for name in runtime} == runtime
    assert {name: dev[name] for name in demo} == demo
    for pinned in (runtime, demo, dev):
        assert pinned["torch"].split("+")[0] == "2.13.0"


def test_make_setup_installs_the_dev_lock():
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    assert [line for line in lines if line and not line.startswith("#")] == [
        "-r requirements/dev.txt"
    ]


# The wheel


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[zipfile.ZipFile]:
    """The wheel built from a copy of this checkout (so no build output lands in it)."""
    source = tmp_path_factory.mktemp("source") / "vigil"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*NOT_COPIED))
    out = tmp_path_factory.mktemp("dist")
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    built = subprocess.run(
        [*command, "--quiet", "--wheel-dir", str(out), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (path,) = out.glob("vigil-*.whl")
    with zipfile.ZipFile(path) as opened:
        yield opened


def dist_info(wheel: zipfile.ZipFile, name: str) -> str:
    (path,) = [n for n in wheel.namelist() if re.fullmatch(rf"vigil-[^/]+\.dist-info/{name}", n)]
    return wheel.read(path).decode()


@pytest.mark.e2e
def test_the_wheel_holds_every_module_of_every_package(wheel):
    sources = {"celery_config.py"}
    for package in PACKAGES:
        sources |= {p.relative_to(ROOT).as_posix() for p in (ROOT / package).rglob("*.py")}
    assert sorted(sources - set(wheel.namelist())) == []


@pytest.mark.e2e
def test_the_wheel_holds_the_files_read_at_run_time(wheel):
    names = set(wheel.namelist())
    assert [path for path in RUNTIME_DATA if path not in names] == []
    weights = "inference/weights/nanodet.bin"
    assert wheel.read(weights) == (ROOT / weights).read_bytes()


@pytest.mark.e2e
def test_the_wheel_declares_the_vigil_command_and_its_license(wheel):
    entry_points = dist_info(wheel, "entry_points.txt")
    assert re.search(r"^\[console_scripts\]\nvigil = vigil\.cli:main$", entry_points, re.M)
    metadata = dist_info(wheel, "METADATA")
    assert "License-Expression: Apache-2.0" in metadata
    licenses = {n.split("/licenses/", 1)[1] for n in wheel.namelist() if "/licenses/" in n}
    assert {"LICENSE", "NOTICE", "inference/weights/NOTICE"} <= licenses
