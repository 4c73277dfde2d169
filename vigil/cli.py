"""The ``vigil`` command: one entry point for the operator commands of every package.

    vigil users create ana@example.com --home Home --tier premium
    vigil migrate                      # apply pending SQL migrations to DATABASE_URL
    vigil detect photo.jpg --json      # the detector on images or URLs
    vigil settings                     # every environment variable, its default, its meaning
    vigil settings --env               # the same as a commented .env file (.env.example)

Each command imports its package only when it runs, so ``vigil --help`` is quick and only
``detect`` loads torch.
"""

from __future__ import annotations

import dataclasses
import importlib
import sys
import textwrap
from typing import Any

import click
from flask import Flask
from flask.cli import ScriptInfo

from schedules.config import DEFAULT_TIERS, ENV_PREFIX, SchedulerConfig
from vigil import settings


class LazyGroup(click.Group):
    """A group whose commands are another module's click group, imported on first use."""

    def __init__(self, *args: Any, source: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.source = source  # "module:attribute"

    def _source(self) -> click.Group:
        module, _, attribute = self.source.partition(":")
        group = getattr(importlib.import_module(module), attribute)
        if not isinstance(group, click.Group):
            raise TypeError(f"{self.source} is not a click group")
        return group

    def list_commands(self, ctx: click.Context) -> list[str]:
        return self._source().list_commands(ctx)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return self._source().get_command(ctx, cmd_name)


def _create_app() -> Flask:
    from webapp import create_app

    return create_app()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.pass_context
def main(ctx: click.Context) -> None:
    """Vigil: operator commands for the home-security events backend."""
    # The web app's commands run inside its app context; Flask builds the app from this
    # only when such a command runs, so a bad setting stops only the command that needs it.
    ctx.obj = ScriptInfo(create_app=_create_app)


main.add_command(
    LazyGroup(
        "users",
        source="webapp.cli:users_cli",
        help="Create, disable, enable or delete user accounts (the web app's `flask users`).",
    )
)


@main.command()
def migrate() -> None:
    """Apply pending SQL migrations to DATABASE_URL."""
    from store.migrate import main as migrate_main

    sys.exit(migrate_main())


@main.command(
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
    add_help_option=False,
)
@click.argument("arguments", nargs=-1, type=click.UNPROCESSED)
def detect(arguments: tuple[str, ...]) -> None:
    """Find objects in images (paths or URLs); `vigil detect --help` lists the options."""
    from inference import cli  # torch: loaded only for this command

    sys.exit(cli.main(["detect", *arguments]))


@main.command("settings")
@click.option("--env", "as_env", is_flag=True, help="Print a commented .env file instead.")
def show_settings(as_env: bool) -> None:
    """Print every environment variable the product reads: default and meaning."""
    click.echo(env_example() if as_env else settings.markdown_table(), nl=False)


ENV_HEADER = """\
# Every environment variable Vigil reads (vigil/settings.py), commented out at its default.
# Web, workers and beat must see the same values. An empty value counts as unset.
# Written by `vigil settings --env`; tests/test_packaging.py keeps the two equal.
"""


def env_example() -> str:
    """A .env file naming every variable of ``Settings``, each commented out at its default."""
    lines = [ENV_HEADER]
    for group, title in settings.GROUPS.items():
        lines.append(f"\n# --- {title} ---\n")
        for f in dataclasses.fields(settings.Settings):
            if f.metadata.get("group") != group:
                continue
            if f.name == "scheduler":
                lines.extend(_scheduler_lines())
                continue
            value = _env_value(f)
            lines.extend(_comment(f.metadata["doc"] + _default_note(f, value)))
            lines.append(f"# {f.metadata['env']}={value}\n")
    return "".join(lines)


def _comment(text: str) -> list[str]:
    return [f"# {line}\n" for line in textwrap.wrap(text.replace("`", ""), width=96)]


def _default_note(f: dataclasses.Field[Any], value: str) -> str:
    """What an unset variable means, where the line below does not say it already."""
    shown = str(f.metadata.get("shown") or "none")
    if shown in (value, "none"):
        return ""
    return f" (default: {shown})"


def _env_value(f: dataclasses.Field[Any]) -> str:
    """The default as the variable would spell it; empty when there is none."""
    if f.metadata.get("parse") is None:
        # A Procfile variable: the shell applies its default, the table shows it ("none": unset).
        shown = str(f.metadata["shown"])
        return "" if shown == "none" else shown
    return _spelled(f.default)


def _spelled(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, tuple):
        return ",".join(str(item) for item in value)
    return str(value)


def _scheduler_lines() -> list[str]:
    """``SCHEDULER_*``: each scalar of SchedulerConfig, then each default tier's fields."""
    defaults = SchedulerConfig()
    lines = ["# Triage (schedules/config.py, docs/scheduling.md; rates are events per minute)\n"]
    for f in dataclasses.fields(SchedulerConfig):
        if f.name != "tiers":
            lines.append(f"# {ENV_PREFIX}{f.name.upper()}={getattr(defaults, f.name)}\n")
    for name, tier in DEFAULT_TIERS.items():
        prefix = f"{ENV_PREFIX}TIER_{name.upper()}"
        for f in dataclasses.fields(tier):
            if f.name != "name":
                value = getattr(tier, f.name)
                shown = "" if value is None else value
                lines.append(f"# {prefix}_{f.name.upper()}={shown}\n")
    return lines


if __name__ == "__main__":
    main()
