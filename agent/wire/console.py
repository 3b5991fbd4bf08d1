"""Terminal helpers shared by both CLIs: the --config option, config loading that exits cleanly,
tables, errors."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from pantau.agent.wire.settings import ConfigError, PantauSettings, load_settings
from rich.console import Console
from rich.markup import escape
from rich.table import Table

S = TypeVar("S", bound=PantauSettings)

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="YAML config file (default: $PANTAU_CONFIG)."),
]
VerboseOption = Annotated[bool, typer.Option("--verbose", "-v", help="Log progress.")]

# Piped output (scripts, logs) gets wide tables instead of rich's 80-column default.
_WIDTH = None if sys.stdout.isatty() else 220
err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True, width=_WIDTH)


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def logging_option(verbose: VerboseOption = False) -> None:
    """The root callback of both command lines: `-v` logs progress."""
    setup_logging(verbose)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print `error: message` on stderr and exit with `code` (2: the input was wrong)."""
    err.print(f"[bold red]error:[/] {escape(message)}", markup=True)
    sys.exit(code)


def load_or_exit(cls: type[S], path: Path | None) -> S:
    """Load settings, or print `field.path: value -> reason` lines and exit with code 2."""
    try:
        return load_settings(cls, path)
    except ConfigError as exc:
        where = f" ({exc.source})" if exc.source else ""
        err.print(f"[bold red]invalid configuration{where}:[/]", markup=True)
        for line in exc.lines:
            err.print(f"  {line}", markup=False)
        sys.exit(2)


def table(rows: Iterable[dict[str, Any]], columns: Sequence[str], title: str | None = None) -> None:
    t = Table(title=title, show_lines=False, header_style="bold")
    for c in columns:
        t.add_column(c)
    n = 0
    for r in rows:
        t.add_row(*("" if r.get(c) is None else str(r.get(c)) for c in columns))
        n += 1
    if n == 0:
        out.print(f"(no {title.lower() if title else 'rows'})")
    else:
        out.print(t)
