"""Declaring settings read from environment variables: ``var()`` fields and their parsers.

Each parser takes the variable's name and its raw text and returns the value, or raises
``SettingsError`` with a message that names the variable. Empty text counts as unset.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import field
from pathlib import Path
from typing import Any

Parse = Callable[[str, str], Any]


class SettingsError(ValueError):
    """A variable has a value the product cannot use; the message names the variable."""


# Parsers: (variable name, raw text) -> value. Each error names the variable.


def text(name: str, raw: str) -> str:
    return raw


def integer(name: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, got {raw!r}") from None


def positive_integer(name: str, raw: str) -> int:
    value = integer(name, raw)
    if value < 1:
        raise SettingsError(f"{name} must be at least 1, got {value}")
    return value


def non_negative_integer(name: str, raw: str) -> int:
    value = integer(name, raw)
    if value < 0:
        raise SettingsError(f"{name} must be 0 or more, got {value}")
    return value


def positive_number(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise SettingsError(f"{name} must be a number above 0, got {raw!r}")
    return value


def comma_list(name: str, raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def url(name: str, raw: str) -> str:
    if "://" not in raw:
        raise SettingsError(f"{name} must be a URL (scheme://...), got {raw!r}")
    return raw.rstrip("/") if raw.startswith("http") else raw


def url_list(name: str, raw: str) -> tuple[str, ...]:
    """Comma-separated URLs, each checked as ``url`` checks one."""
    return tuple(url(name, item) for item in comma_list(name, raw))


TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


def boolean(name: str, raw: str) -> bool:
    word = raw.strip().lower()
    if word in TRUE_WORDS or word in FALSE_WORDS:
        return word in TRUE_WORDS
    raise SettingsError(f"{name} must be one of {', '.join(TRUE_WORDS + FALSE_WORDS)}, got {raw!r}")


DEEP_MODELS = ("nanodet", "devicesim")


def deep_model_name(name: str, raw: str) -> str:
    if raw not in DEEP_MODELS:
        raise SettingsError(f"{name} must be one of {', '.join(DEEP_MODELS)}, got {raw!r}")
    return raw


def key_namespace(name: str, raw: str) -> str:
    """A prefix for Redis key names: printable, no spaces (a hash tag in braces is fine)."""
    if not raw.isprintable() or any(c.isspace() for c in raw) or len(raw) > 64:
        raise SettingsError(f"{name} must be up to 64 printable characters without spaces")
    return raw


def file_contents(name: str, raw: str) -> str:
    """A path whose contents are the value (a key or credentials file)."""
    try:
        return Path(raw).read_text()
    except OSError as exc:
        raise SettingsError(f"{name}: cannot read {raw}: {exc.strerror or exc}") from None


def var(
    env: str,
    default: Any,
    doc: str,
    parse: Parse = text,
    *,
    group: str,
    shown_default: str | None = None,
) -> Any:
    """A field read from the environment variable ``env``; empty counts as unset."""
    meta = {"env": env, "doc": doc, "parse": parse, "group": group, "shown": shown_default}
    return field(default=default, metadata=meta)


def process_var(env: str, default: str, doc: str) -> Any:
    """A variable the Procfile's command lines read; listed for the table, never parsed."""
    return field(
        default=None,
        metadata={"env": env, "doc": doc, "parse": None, "group": "processes", "shown": default},
    )
