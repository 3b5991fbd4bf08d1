"""`pantau-agent`: the command line a field technician uses to run, tune and check an agent."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
