"""calicoctl command family: ``validate -f FILE|DIR|-``.

Decodes every document of the given file(s) through :mod:`pycalico.api` without touching
any datastore. Exit 0 and one success line when every resource is valid; otherwise exit 1
and one line per problem, ``<Kind> <name>: <field.path>: <reason>`` (problems that are not
about a resource, such as YAML syntax errors, read ``<file>: <reason>``). Warnings about
valid resources (``Warning: <Kind> <name>: <field.path>: <reason>``) go to stderr and do not
change the exit code.
A directory means every ``*.yaml``/``*.yml``/``*.json`` file in it (``-R`` to recurse).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from pycalico.api import Problem, Resource, ValidationFailed, decode_all
from pycalico.api.loader import ManifestError, read_manifest
from pycalico.errors import excerpt

SUFFIXES = (".yaml", ".yml", ".json")


def manifest_files(target: str, recursive: bool = False) -> list[Path]:
    """The manifest files ``target`` names: itself, or the manifests in a directory."""
    path = Path(target)
    if not path.is_dir():
        return [path]
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in path.glob(pattern) if p.is_file() and p.suffix in SUFFIXES)


def manifest_targets(target: str, recursive: bool = False) -> list[str | Path]:
    """``["-"]`` for stdin, else :func:`manifest_files`."""
    return ["-"] if target == "-" else list(manifest_files(target, recursive))


def format_problem(problem: Problem, source: str) -> str:
    if not problem.kind:
        return f"{excerpt(problem.name or source)}: {excerpt(problem.reason, 400)}"
    return str(problem)


def read_source(target: str | Path) -> tuple[str, str]:
    """(source name, text) of one manifest file or ``-`` (stdin): at most
    :data:`~pycalico.api.loader.MAX_MANIFEST_BYTES` are read, and the text must be UTF-8.
    Raises :class:`~pycalico.api.loader.ManifestError`."""
    if str(target) == "-":
        return "<stdin>", read_manifest(sys.stdin.buffer, "<stdin>")
    name = str(target)
    try:
        with open(name, "rb") as f:
            return name, read_manifest(f, name)
    except OSError as e:
        raise ManifestError(name, f"cannot read: {e.strerror or e}") from None


def validate_sources(
    targets: list[str], recursive: bool = False, warnings: list[str] | None = None
) -> tuple[int, list[str]]:
    """Validate every manifest in ``targets``; return (number valid, problem lines). With
    ``warnings`` given, the valid resources' warnings are appended to it."""
    lines: list[str] = []
    count = 0
    for target in targets:
        sources: list[tuple[str, str]] = []
        files: list[str | Path] = (
            ["-"] if target == "-" else list(manifest_files(target, recursive))
        )
        if not files:
            lines.append(f"{excerpt(target)}: no manifests found")
        for f in files:
            try:
                sources.append(read_source(f))
            except ManifestError as e:
                lines.append(str(e))
        for name, text in sources:
            try:
                decoded = decode_all(text, source=name)
                count += len(decoded)
                if warnings is not None:
                    warnings.extend(warning_lines(decoded))
            except ValidationFailed as e:
                lines.extend(format_problem(p, name) for p in e.problems)
    return count, lines


def warning_lines(resources: list[Resource]) -> list[str]:
    """``Warning: <Kind> <name>: <field>: <reason>`` for each resource's warnings."""
    return [f"Warning: {w}" for r in resources for w in r.warnings()]


@click.command("validate")
@click.option(
    "-f",
    "--filename",
    "filenames",
    multiple=True,
    required=True,
    help="File or directory of manifests to validate, or '-' for stdin.",
)
@click.option("-R", "--recursive", is_flag=True, help="Process directories recursively.")
def validate(filenames: tuple[str, ...], recursive: bool) -> None:
    """Validate resource manifests without applying them."""
    warnings: list[str] = []
    count, lines = validate_sources(list(filenames), recursive, warnings)
    for line in warnings:
        click.echo(line, err=True)
    if lines:
        for line in lines:
            click.echo(line)
        sys.exit(1)
    click.echo(f"Successfully validated {count} resource(s)")


COMMANDS: list[click.Command] = [validate]
