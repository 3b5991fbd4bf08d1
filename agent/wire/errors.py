"""The base of every error Pantau raises on purpose: its message says what went wrong and
where, so a command line can print it without a traceback."""

from __future__ import annotations


class PantauError(Exception):
    """An error with a message meant for the person running Pantau."""
