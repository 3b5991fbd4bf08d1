"""Central's storage in PostgreSQL (psycopg 3): `postgresql://user@host/db`, for many cameras
and several workers.

Raw `buckets` (with their count rows packed: see storage.packed) are partitioned by UTC day:
partitions are created a week ahead and on demand for late data, each in its own short
transaction, and retention drops whole partitions. Workers serialize per agent with
transaction-scoped advisory locks, so seq and rollup bookkeeping never races.
Batched appends go through COPY.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, ClassVar

import psycopg
from pantau.agent.wire.migrations import SchemaTooNewError
from pantau.agent.wire.settings import redact_url
from pantau.central.storage import packed
from pantau.central.storage.base import DAY, MAX_BUCKET_SECONDS, CameraKey, Storage, quoted
from pantau.central.storage.postgres_schema import MIGRATIONS
from psycopg.adapt import Loader

# Any key will do as long as every worker uses the same: migrations run one worker at a time.
_MIGRATION_LOCK = 0x70616E74
# Workers create partitions one at a time.
_PARTITION_LOCK = 0x70617274
_PARAM = re.compile(r"\?")
# Tables whose upserts go through a temporary staging table (see upsert_rows).
_STAGED = ("hourly", "daily", "events")
_IN_TRANSACTION = psycopg.pq.TransactionStatus.INTRANS


class DatabaseTooNewError(SchemaTooNewError):
    """A PostgreSQL database whose schema_version is newer than this release knows."""

    def __init__(self, where: str, found: int, supported: int) -> None:
        Exception.__init__(
            self,
            f"{where} has schema version {found}, newer than this release supports "
            f"(up to {supported}); use the release that wrote it, or a newer one",
        )
        self.where = where
        self.found = found
        self.supported = supported


class _IsoTime(Loader):
    """timestamptz as RFC 3339 UTC text, as SQLite stores it (the session is in UTC)."""

    def load(self, data: Any) -> str:
        text = bytes(data).decode()  # '2026-11-27 08:00:00+00'
        return text[:10] + "T" + text[11:19] + "Z"


class _Number(Loader):
    """numeric (what SUM of bigint gives) as int when whole, else float."""

    def load(self, data: Any) -> int | float:
        value = Decimal(bytes(data).decode())
        return int(value) if value == value.to_integral_value() else float(value)


def _day_name(day: int) -> str:
    return datetime.fromtimestamp(day, timezone.utc).strftime("%Y%m%d")


class PostgresStorage(Storage):
    environmental: ClassVar[tuple[type[BaseException], ...]] = (
        psycopg.OperationalError,
        psycopg.errors.ReadOnlySqlTransaction,
        psycopg.errors.InsufficientResources,
        psycopg.errors.AdminShutdown,
    )

    def _connect(self, url: str) -> None:
        self._where = redact_url(url)
        self.conn = psycopg.connect(url, autocommit=True)
        self.conn.execute("SET TimeZone = 'UTC'")
        self.conn.execute("SET plan_cache_mode = force_custom_plan")
        self.conn.adapters.register_loader("timestamptz", _IsoTime)
        self.conn.adapters.register_loader("numeric", _Number)
        self._days: set[int] = set()
        self._migrate()
        self._stages: set[str] = set()  # staging tables made in this session (upsert_rows)

    @staticmethod
    def missing(url: str) -> str | None:
        """Why the database cannot be reached (None: it can)."""
        try:
            psycopg.connect(url, connect_timeout=10).close()
        except psycopg.Error as exc:
            return f"cannot reach {redact_url(url)}: {str(exc).strip()}"
        return None

    def _migrate(self) -> None:
        with self.conn.transaction():
            self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            self.conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"
            )
            found = self.schema_version()
            if found > len(MIGRATIONS):
                raise DatabaseTooNewError(self._where, found, len(MIGRATIONS))
            for migration in MIGRATIONS[found:]:
                self.conn.execute(migration.sql)
                self.conn.execute("DELETE FROM schema_version")
                self.conn.execute("INSERT INTO schema_version VALUES (%s)", (migration.version,))

    def execute(self, sql: str, args: Sequence[Any] = ()) -> psycopg.Cursor:
        return self.conn.execute(_PARAM.sub("%s", sql.replace("%", "%%")), args or None)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        rows = list(rows)
        if rows:
            with self.conn.cursor() as cur:
                cur.executemany(_PARAM.sub("%s", sql.replace("%", "%%")), rows)

    def insert_rows(self, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
        if not rows:
            return
        with (
            self.conn.cursor() as cur,
            cur.copy(f"COPY {table} ({', '.join(map(quoted, columns))}) FROM STDIN") as copy,
        ):
            for row in rows:
                copy.write_row(row)

    def begin(self) -> None:
        self.conn.execute("BEGIN")

    def commit(self) -> None:
        self.conn.execute("COMMIT")

    def rollback(self) -> None:
        if self.conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            self.conn.execute("ROLLBACK")
        self._stages.clear()  # any made in the transaction are gone

    def close(self) -> None:
        self.conn.close()

    @property
    def where(self) -> str:
        return self._where

    def schema_version(self) -> int:
        row = self.conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
        return 0 if row is None or row[0] is None else int(row[0])

    def size_bytes(self) -> int:
        return int(self.one("SELECT pg_database_size(current_database())"))

    def _lock_agents(self, agents: list[tuple[str, str]]) -> None:
        # One statement; unnest yields the keys, and the locks are taken, in the given order.
        keys = [zlib.crc32(f"{site}/{agent}".encode()) - 2**31 for site, agent in agents]
        if keys:
            self.conn.execute(
                "SELECT pg_advisory_xact_lock(1, k) FROM unnest(%s::int[]) k", (keys,)
            )

    def _track_seqs(self, messages: list[Any], received_at: str) -> None:
        # Pipeline mode: the bookkeeping's writes go out without waiting for each answer.
        with self.conn.pipeline():
            super()._track_seqs(messages, received_at)

    def upsert_rows(
        self, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]], tail: str = ""
    ) -> None:
        """COPY into the table's temporary staging twin, then one INSERT ... SELECT: a
        statement of thousands of parameters costs more to build and parse than the rows."""
        stage = f"stage_{table}"
        if table not in _STAGED or self.conn.info.transaction_status != _IN_TRANSACTION:
            super().upsert_rows(table, columns, rows, tail)
            return
        if not rows:
            return
        if stage not in self._stages:
            # Made when first needed (a session that only reads, on a replica, makes none);
            # columns without constraints: a row staged without its generated id is fine.
            self.conn.execute(
                f"CREATE TEMPORARY TABLE IF NOT EXISTS {stage} ON COMMIT DELETE ROWS AS "
                f"SELECT * FROM {table} WITH NO DATA"
            )
            self._stages.add(stage)
        self.insert_rows(stage, columns, rows)
        names = ", ".join(map(quoted, columns))
        # DELETE ... RETURNING empties the stage for a second use in this transaction, and
        # yields the rows in the order they were staged (a fresh heap); ON COMMIT DELETE ROWS
        # truncates it (temporary tables are never vacuumed).
        self.conn.execute(
            f"WITH moved AS (DELETE FROM {stage} RETURNING {names}) INSERT INTO {table} "
            f"({names}) SELECT {names} FROM moved {tail}"
        )

    def _buckets_near(self, spans: dict[CameraKey, tuple[int, int]]) -> list[tuple[Any, ...]]:
        # As Storage._buckets_near, in one statement of five arrays whatever the cameras.
        items = sorted(spans.items())
        if not items:
            return []
        columns = list(zip(*[(*key, lo, hi) for key, (lo, hi) in items], strict=True))
        # The whole batch's window as constants too: the planner then prunes the day
        # partitions outside it (per-camera bounds from the unnest prune none, and every
        # camera would probe every day of the history).
        window = min(columns[3]) - MAX_BUCKET_SECONDS, max(columns[4])
        return self.conn.execute(
            # The last start at or before lo first, once per camera; then the range from it.
            # OFFSET 0 keeps each subquery a per-camera index scan (not a join whose
            # filter runs the MAX subquery once per stored bucket).
            "SELECT k.site, k.agent, k.camera, b.start_s, b.end_s, b.msg_id FROM "
            "unnest(%s::text[], %s::text[], %s::text[], %s::bigint[], %s::bigint[]) "
            "AS k(site, agent, camera, lo, hi) CROSS JOIN LATERAL (SELECT COALESCE(MAX(start_s), "
            "k.lo) AS first FROM buckets WHERE site = k.site AND agent = k.agent AND "
            "camera = k.camera AND start_s <= k.lo AND start_s > k.lo - %s AND "
            "start_s > %s AND start_s < %s OFFSET 0) f "
            "CROSS JOIN LATERAL (SELECT start_s, end_s, msg_id FROM buckets WHERE site = k.site "
            "AND agent = k.agent AND camera = k.camera AND start_s >= f.first AND "
            "start_s < k.hi AND start_s > %s AND start_s < %s OFFSET 0) b",
            [*map(list, columns), MAX_BUCKET_SECONDS, *window, *window],
        ).fetchall()

    def try_lock(self, name: str) -> bool:
        key = zlib.crc32(name.encode())
        return bool(self.one("SELECT pg_try_advisory_xact_lock(2, ?)", (key - 2**31,)))

    def _prepare_days(self, days: set[int]) -> None:
        for day in sorted(days - self._days):
            name, end = _day_name(day), day + DAY
            with self.conn.transaction():
                # IF NOT EXISTS does not guard against another worker creating it right now.
                self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (_PARTITION_LOCK,))
                self.conn.execute(
                    f"CREATE TABLE IF NOT EXISTS buckets_{name} PARTITION OF buckets FOR VALUES "
                    f"FROM ({day}) TO ({end})"
                )
            self._days.add(day)

    def _partitions(self, parent: str) -> list[str]:
        return [
            r[0]
            for r in self.fetch(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = CAST(? AS regclass) ORDER BY 1",
                (parent,),
            )
        ]

    def _drop_raw_before(self, cutoff: int) -> tuple[int, int]:
        """Drop whole day partitions of `buckets` that end at or before `cutoff`."""
        last = _day_name(cutoff - DAY)
        rows = buckets = 0
        for part in self._partitions("buckets"):
            if part.rsplit("_", 1)[1] > last:
                continue
            with self.conn.transaction():
                n, m = self.fetch(
                    f"SELECT COUNT(*), COALESCE(SUM({packed.rows_sql('GREATEST')}), 0) FROM {part}"
                )[0]
                self.conn.execute(f"DROP TABLE {part}")
                self._count("buckets", -n)
                self._count("count_rows", -m)
            buckets += n
            rows += m
        self._days = {d for d in self._days if d >= cutoff}
        return rows, buckets
