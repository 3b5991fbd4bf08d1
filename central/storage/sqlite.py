"""Central's storage in one SQLite file (the embedded default): `sqlite:///PATH`."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

from pantau.agent.wire.migrations import connect, schema_version
from pantau.central.storage import packed
from pantau.central.storage.base import Storage
from pantau.central.storage.sqlite_schema import MIGRATIONS


def sqlite_path(url: str) -> Path:
    """The file of a `sqlite:///path` URL (four slashes for an absolute path)."""
    return Path(url.removeprefix("sqlite:///"))


class SqliteStorage(Storage):
    """One writer at a time (BEGIN IMMEDIATE), WAL so that readers never wait."""

    environmental: ClassVar[tuple[type[BaseException], ...]] = (sqlite3.OperationalError,)

    def _connect(self, url: str) -> None:
        self.path = sqlite_path(url)
        self.conn = connect(self.path, MIGRATIONS)
        self.conn.execute("PRAGMA journal_mode=WAL")
        # Messages are acknowledged to the broker after commit: the commit must be on disk.
        self.conn.execute("PRAGMA synchronous=FULL")
        # Count keys arrive spread over the whole primary key (every camera, rule and class at
        # once): a cache that holds the hot B-tree pages keeps inserts off the disk.
        self.conn.execute("PRAGMA cache_size=-131072")

    @staticmethod
    def missing(url: str) -> str | None:
        """Why a database to read from is not there (None: it is)."""
        path = sqlite_path(url)
        return None if path.exists() else f"no database at {path}"

    def execute(self, sql: str, args: Sequence[Any] = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql, args)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self.conn.executemany(sql, rows)

    def insert_rows(self, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
        self.upsert_rows(table, columns, rows)

    def begin(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        self.conn.execute("COMMIT")

    def rollback(self) -> None:
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")

    def close(self) -> None:
        self.conn.close()

    @property
    def where(self) -> str:
        return str(self.path)

    def schema_version(self) -> int:
        return schema_version(self.conn)

    def size_bytes(self) -> int:
        pages = self.one("PRAGMA page_count") - self.one("PRAGMA freelist_count")
        return int(pages * self.one("PRAGMA page_size"))

    def _drop_raw_before(self, cutoff: int) -> tuple[int, int]:
        """DELETE per camera, along the primary key (site, agent, camera, then time), one
        transaction each with its counters."""
        dropped_rows = dropped_buckets = 0
        cameras = self.fetch("SELECT DISTINCT site, agent, camera FROM cameras")
        for key in cameras:
            where = "site = ? AND agent = ? AND camera = ? AND start_s < ?"
            self.begin()
            try:
                rows = self.one(
                    f"SELECT COALESCE(SUM({packed.rows_sql('MAX')}), 0) FROM buckets WHERE {where}",
                    (*key, cutoff),
                )
                buckets = self.execute(
                    f"DELETE FROM buckets WHERE {where}", (*key, cutoff)
                ).rowcount
                self._count("count_rows", -rows)
                self._count("buckets", -buckets)
                self.commit()
            except BaseException:
                self.rollback()
                raise
            dropped_rows += rows
            dropped_buckets += buckets
        return dropped_rows, dropped_buckets
