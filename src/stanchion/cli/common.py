"""What every CLI module shares: the consoles, the common options, and error -> exit code."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from stanchion.app import App, build
from stanchion.errors import ModelError, StanchionError
from stanchion.spec import SPEC_FILENAME, load_spec

out = Console()
err = Console(stderr=True)

SpecOption = Annotated[
    Path | None,
    typer.Option(
        "--spec", "-s", help=f"Spec file (default: ./{SPEC_FILENAME} if present, else built-in defaults)."
    ),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print one JSON object instead of tables (for scripts).")
]


def fail(exc: StanchionError) -> typer.Exit:
    """Print the error; exit 1 when a model failed (a partial failure), 2 for usage or spec errors."""
    err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
    return typer.Exit(1 if isinstance(exc, ModelError) else 2)


def load_app(spec_file: Path | None) -> App:
    try:
        return build(load_spec(spec_file))
    except StanchionError as exc:
        raise fail(exc) from None


@contextmanager
def opened_app(spec_file: Path | None) -> Iterator[App]:
    """The spec's App for one command, closed when the command is done; a StanchionError inside
    is printed and becomes the exit code (``fail``)."""
    app = load_app(spec_file)
    try:
        yield app
    except StanchionError as exc:
        raise fail(exc) from None
    finally:
        app.close()


def operator() -> str:
    """Who ran an administrative command, for the audit log: the login name, else "cli"."""
    return os.environ.get("USER") or "cli"


def empty_index_hint(app: App) -> str:
    """Why a search found nothing when the reason is an empty index, else "" (a filter, a bad query)."""
    if app.store.stats().documents:
        return ""
    where = app.spec.resolve(app.spec.index.path) if app.spec.index.backend == "sqlite" else "PostgreSQL"
    return f"the index ({where}) holds no documents yet; run `stanchion ingest` first"
