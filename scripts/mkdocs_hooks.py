"""MkDocs hook: the reference pages are generated from the code at build time, so they
cannot drift from it.

- ``reference/calicoctl.md``, ``reference/calico-node.md``, ``reference/calico-lab.md``:
  every command of each click CLI, recursively (usage, help text, options).
- ``reference/settings.md``: calico-node's settings (:data:`pycalico.node.envfile.KNOWN`).

Nothing is written into ``docs/``: the pages exist only in the build.
"""

from __future__ import annotations

import importlib
from typing import Any

import click
from mkdocs.structure.files import File, Files

CLIS = {
    "calicoctl": "pycalico.ctl.main",
    "calico-node": "pycalico.node.main",
    "calico-lab": "pycalico.lab.main",
}


def _command_md(cmd: click.Command, path: list[str], level: int) -> list[str]:
    name = " ".join(path)
    ctx = click.Context(cmd, info_name=name)
    out = [f"{'#' * min(level, 6)} `{name}`", ""]
    if cmd.help:
        out += [click.unstyle(cmd.help).strip(), ""]
    out += ["```text", cmd.get_usage(ctx).strip(), "```", ""]
    rows = []
    for param in cmd.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is not None:
            opt, text = record
            rows.append(f"| `{opt}` | {text.replace('|', '&#124;')} |")
    if rows:
        out += ["| option | meaning |", "|---|---|", *rows, ""]
    if isinstance(cmd, click.Group):
        for sub_name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, sub_name)
            if sub is not None and not sub.hidden:
                out += _command_md(sub, [*path, sub_name], level + 1)
    return out


def cli_page(prog: str, module: str) -> str:
    cli = importlib.import_module(module).cli
    head = [f"# {prog} reference", "",
            f"Generated from the code (`{module}`) when the site is built.", ""]  # fmt: skip
    return "\n".join(head + _command_md(cli, [prog], 2)) + "\n"


def settings_page() -> str:
    from pycalico.model.booleans import BOOL_WORDS
    from pycalico.node.envfile import CHOICES, DEFAULT_CONFIG_FILE, KNOWN

    lines = [
        "# calico-node settings",
        "",
        f"calico-node reads these from its environment and from `{DEFAULT_CONFIG_FILE}` "
        "(or `--config-file`, or `CALICO_NODE_CONFIG`); the environment wins. Any "
        "`FELIX_<FIELD>` sets a FelixConfiguration field for this node. Generated from "
        "`pycalico.node.envfile`.",
        "",
        "Boolean settings accept `true`/`false`, `1`/`0`, `yes`/`no`, `y`/`n`, `t`/`f` and "
        "`on`/`off` (any case); any other value is an error that names the setting, never a "
        "silent false.",
        "",
        "| setting | meaning | values |",
        "|---|---|---|",
    ]
    for name, meaning in sorted(KNOWN.items()):
        choices = CHOICES.get(name, ())
        values = "true, false" if choices is BOOL_WORDS else ", ".join(choices)
        lines.append(f"| `{name}` | {meaning} | {values} |")
    return "\n".join(lines) + "\n"


def on_files(files: Files, config: Any) -> Files:
    for prog, module in CLIS.items():
        files.append(File.generated(config, f"reference/{prog}.md", content=cli_page(prog, module)))
    files.append(File.generated(config, "reference/settings.md", content=settings_page()))
    return files
