"""``make run``'s dev defaults: loopback, generated secrets kept in the var dir, and the
dev.env that ``make user`` sources."""

from __future__ import annotations

import shlex
import stat
import subprocess
from pathlib import Path

import pytest

from demo.run import DEV_BIND_ADDRESS, dev_defaults, dev_env_text, kept_secret, write_dev_env

pytestmark = pytest.mark.unit


def test_defaults_fill_only_what_is_unset(tmp_path: Path):
    said: list[str] = []
    env: dict[str, str] = {}
    dev_defaults(env, tmp_path, said.append)
    assert env["BIND_ADDRESS"] == DEV_BIND_ADDRESS == "127.0.0.1"
    user, password = env["FLOWER_BASIC_AUTH"].split(":")
    assert user == "vigil" and len(password) >= 20
    assert (tmp_path / "flower_password").read_text().strip() == password
    assert any(password in line for line in said)  # printed, so the developer can log in
    assert env["JWT_SECRET_KEY"] == (tmp_path / "jwt_secret").read_text().strip()
    again: dict[str, str] = {}
    dev_defaults(again, tmp_path, said.append)
    assert again == env  # kept: a restart of `make run` keeps tokens and the Flower login
    given = {"BIND_ADDRESS": "0.0.0.0", "FLOWER_BASIC_AUTH": "ops:s3cret", "JWT_SECRET_KEY": "k"}
    chosen = dict(given)
    dev_defaults(chosen, tmp_path / "other", said.append)
    assert chosen == given


def test_secrets_are_private_files(tmp_path: Path):
    secret = kept_secret(tmp_path / "sub" / "s")
    assert stat.S_IMODE((tmp_path / "sub" / "s").stat().st_mode) == 0o600
    assert kept_secret(tmp_path / "sub" / "s") == secret


@pytest.mark.e2e  # runs sh
def test_dev_env_is_shell_quoted_and_sourced_back_exactly(tmp_path: Path):
    env = {
        "REDIS_URL": "redis://127.0.0.1:6379/0",
        "DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/vigil?application_name=a b",
        "JWT_SECRET_KEY": "it's $HOME `x`",
        "PATH": "/not/written",
    }
    assert "PATH" not in dev_env_text(env)
    path = write_dev_env(tmp_path, env)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    show = 'printf \'%s\\n\' "$DATABASE_URL" "$JWT_SECRET_KEY"'
    script = f"set -a; . {shlex.quote(str(path))}; set +a; {show}"
    done = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.splitlines() == [env["DATABASE_URL"], env["JWT_SECRET_KEY"]]
