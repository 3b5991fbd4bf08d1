"""Versioned SQLite schemas: open a database, apply its pending migrations, refuse newer ones."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from pantau.agent.wire.errors import PantauError


class SchemaTooNewError(PantauError):
    """The database was written by a newer release, with a schema this one does not know."""

    def __init__(self, path: Path, found: int, supported: int) -> None:
        super().__init__(
            f"{path} has schema version {found}, newer than this release supports "
            f"(up to {supported}); use the release that wrote it, or a newer one"
        )
        self.path = path
        self.found = found
        self.supported = supported


@dataclass(frozen=True)
class Migration:
    """One step of a schema's history: the SQL that brings version - 1 to `version`."""

    version: int
    sql: str


def schema_version(db: sqlite3.Connection) -> int:
    """The schema version recorded in the file (SQLite's user_version; 0 when never set)."""
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def connect(path: Path, migrations: Sequence[Migration]) -> sqlite3.Connection:
    """Open `path` (creating it if absent) in autocommit mode and bring its schema up to date.

    Version 1 is the schema of the release before versions were recorded; its statements are
    idempotent (IF NOT EXISTS), so such a database, found at version 0, is taken as version 1.
    Raises SchemaTooNewError, leaving the file untouched, when it is newer than `migrations`.
    """
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(migrations) + 1)):
        raise ValueError(f"migrations must be numbered 1, 2, ... in order, not {versions}")
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    try:
        _migrate(db, path, migrations)
    except BaseException:
        db.close()
        raise
    return db


def _migrate(db: sqlite3.Connection, path: Path, migrations: Sequence[Migration]) -> None:
    supported = len(migrations)
    found = schema_version(db)
    if found > supported:
        raise SchemaTooNewError(path, found, supported)
    for migration in migrations[found:]:
        db.execute("BEGIN IMMEDIATE")
        try:
            # Another process may have applied it while this one waited for the write lock.
            if schema_version(db) < migration.version:
                for statement in _statements(migration.sql):
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {migration.version}")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")


def _statements(script: str) -> Iterator[str]:
    """The statements of an SQL script, one by one: `executescript` would commit on its own,
    and a migration and its version stamp must commit together."""
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            yield pending
            pending = ""
    if pending.strip():
        raise ValueError(f"incomplete SQL statement in migration: {pending.strip()[:80]!r}")
