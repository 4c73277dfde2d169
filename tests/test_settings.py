"""vigil.settings: one typed object from the environment; errors name the variable."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from vigil.settings import Settings, SettingsError, markdown_table

pytestmark = pytest.mark.unit

README = Path(__file__).resolve().parent.parent / "README.md"
TABLE = re.compile(r"<!-- settings table: begin -->\n(.*?)<!-- settings table: end -->", re.S)


def test_the_readme_table_is_the_settings_modules_own():
    match = TABLE.search(README.read_text())
    assert match, "README.md lost its settings table markers"
    assert match.group(1) == markdown_table(), "run: python -m vigil.settings"


def test_every_variable_is_documented_once():
    names = [f.metadata["env"] for f in dataclasses.fields(Settings)]
    assert len(names) == len(set(names))
    assert all(f.metadata.get("doc") or f.name == "scheduler" for f in dataclasses.fields(Settings))


def test_unset_and_empty_variables_keep_the_defaults():
    assert Settings.from_environ({}) == Settings.from_environ({"STREAM_MAX_S": "  "}) == Settings()


def test_values_are_parsed_to_their_types():
    settings = Settings.from_environ(
        {
            "STREAM_MAX_S": "120",
            "PUSH_TIMEOUT_S": "2.5",
            "VIGIL_FETCH_ALLOWED_NETWORKS": "10.0.0.0/8, 192.168.1.0/24,",
            "PUBLIC_BASE_URL": "https://vigil.example.com/",
            "SCHEDULER_MAX_BATCH_SIZE": "4",
        }
    )
    assert settings.stream_max_s == 120 and settings.push_timeout_s == 2.5
    assert settings.vigil_fetch_allowed_networks == ("10.0.0.0/8", "192.168.1.0/24")
    assert settings.public_base_url == "https://vigil.example.com"
    assert settings.scheduler.max_batch_size == 4


@pytest.mark.parametrize(
    ("name", "raw", "says"),
    [
        ("STREAM_MAX_S", "five", "STREAM_MAX_S must be a whole number"),
        ("DB_POOL_MAX_SIZE", "0", "DB_POOL_MAX_SIZE must be at least 1"),
        ("TRUSTED_PROXIES", "-1", "TRUSTED_PROXIES must be 0 or more"),
        ("PUSH_LEASE_S", "nan", "PUSH_LEASE_S must be a number above 0"),
        ("PUSH_TIMEOUT_S", "301", "PUSH_TIMEOUT_S must be at most 300"),
        ("REDIS_URL", "localhost:6379", "REDIS_URL must be a URL"),
        ("APNS_KEY_FILE", "/nonexistent/key.p8", "APNS_KEY_FILE: cannot read"),
        ("SCHEDULER_MAX_BATCH_SIZE", "ten", "SCHEDULER_MAX_BATCH_SIZE must be int"),
        ("SCHEDULER_MAX_BACH_SIZE", "10", "unknown scheduler setting SCHEDULER_MAX_BACH_SIZE"),
    ],
)
def test_a_bad_value_is_refused_naming_its_variable(name, raw, says):
    with pytest.raises(SettingsError, match=re.escape(says)):
        Settings.from_environ({name: raw})


def test_credentials_come_from_the_variable_or_its_file_not_both(tmp_path):
    key = tmp_path / "key.p8"
    key.write_text("-----BEGIN PRIVATE KEY-----\n")
    assert Settings.from_environ({"APNS_KEY_FILE": str(key)}).apns_private_key == key.read_text()
    with pytest.raises(SettingsError, match="APNS_KEY or APNS_KEY_FILE, not both"):
        Settings.from_environ({"APNS_KEY": "pem", "APNS_KEY_FILE": str(key)})


def test_derived_values_fall_back_as_documented():
    plain = Settings.from_environ({"REDIS_URL": "redis://r:6379/0", "JWT_SECRET_KEY": "s" * 32})
    assert plain.broker_url == "redis://r:6379/0" and plain.snapshot_secret == "s" * 32
    own = plain.replace(celery_broker_url="redis://b:6379/1", snapshot_url_secret="t" * 32)
    assert own.broker_url == "redis://b:6379/1" and own.snapshot_secret == "t" * 32
