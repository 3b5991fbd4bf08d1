"""Versioned databases: an outbox and a central database written by the v1 release (fixtures/,
made by fixtures/make_v1.py at 072b56f) open and read back unchanged, with rollups made from
what they hold; migrations apply once and atomically, on start or by `pantau-central db
upgrade`; a database newer than this release (SQLite or PostgreSQL) is refused with a clear
message."""

from __future__ import annotations

import os
import shutil
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from pantau.agent.delivery.outbox import LANE_ALERT, LANE_DATA, Outbox
from pantau.agent.delivery.outbox import MIGRATIONS as OUTBOX_MIGRATIONS
from pantau.agent.wire.migrations import Migration, SchemaTooNewError, connect, schema_version
from pantau.agent.wire.protocol import (
    CountsMessage,
    CountsPayload,
    HealthPayload,
)
from pantau.central.storage import Filter, Received, Storage
from pantau.central.storage.base import COUNT_COLUMNS, count_rows, quoted
from pantau.central.storage.postgres_schema import MIGRATIONS as PG_MIGRATIONS
from pantau.central.storage.sqlite_schema import MIGRATIONS as CENTRAL_MIGRATIONS

from tests.conftest import cli
from tests.datapath.conftest import write_central_config
from tests.datapath.fixtures.make_v9 import STORED_AT as V9_STORED_AT
from tests.datapath.fixtures.make_v9 import T0 as V9_T0
from tests.datapath.fixtures.make_v9 import buckets as v9_buckets
from tests.datapath.helpers import agent_config, central_config, central_db, summary_of
from tests.datapath.test_storage import counts

FIXTURES = Path(__file__).resolve().parent / "fixtures"
# What the v1 fixtures hold (see fixtures/make_v1.py).
V1_PUBLISH_ORDER = [10, 16, 0, 1, 2, 5, 11, 12, 13, 14, 15]
V1_SUMMARY = {
    "messages": 8,
    "count_rows": 6,
    "buckets": 6,
    "alerts": 1,
    "agents": 1,
    "cameras": 2,
    "open_gaps": 1,
    "dead_letters": 1,
    "first_bucket": "2026-11-27T08:00:00Z",
    "last_bucket": "2026-11-27T08:09:00Z",
}
# (seq_from, seq_to, missing, lost, closed)
V1_GAPS = [(3, 4, 2, 0, False), (6, 6, 0, 1, True)]


def v1_copy(name: str, dest: Path) -> Path:
    """A fixture copied out: opening migrates it, and the committed file must stay v1."""
    shutil.copyfile(FIXTURES / name, dest)
    assert user_version(dest) == 0  # written before versions were recorded
    return dest


def user_version(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return schema_version(db)
    finally:
        db.close()


def stamp(path: Path, version: int) -> None:
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {version}")
    db.commit()
    db.close()


def gap_rows(st: Storage) -> list[tuple]:
    return [
        (g["seq_from"], g["seq_to"], g["missing"], g["lost"], g["closed_at"] is not None)
        for g in st.gaps()
    ]


def seq_ranges(st: Storage) -> list[tuple[int, int]]:
    return st.fetch("SELECT seq_from, seq_to FROM seq_ranges ORDER BY seq_from")


def test_v1_outbox_reads_back_and_keeps_working(tmp_path):
    path = v1_copy("outbox-v1.db", tmp_path / "outbox.db")
    ob = Outbox(path, agent="a1", site="s1", max_age_seconds=100 * 365 * 86400)
    assert user_version(path) == len(OUTBOX_MIGRATIONS)
    stats = ob.stats()
    assert {k: v["messages"] for k, v in stats["by_kind"].items()} == {
        "counts": 7,
        "alerts": 2,
        "health": 2,
    }
    assert stats["messages"] == 11 and stats["last_seq"] == 16 and stats["merged_buckets"] == 1
    assert [item["message"]["seq"] for item in ob.export()] == V1_PUBLISH_ORDER
    assert ob.get_meta("sim-key") == "12"
    counts = ob.messages("counts")
    cam1 = [m for m in counts if m.camera == "cam1"]
    assert sum(m.payload.lines["door"]["person"].in_ for m in cam1) == sum(range(10))
    assert [m.payload.merged_seqs for m in cam1 if m.payload.merged_seqs] == [
        [2, 3, 4],
        [5, 6, 7, 8, 9],
    ]
    # The publisher's view: alerts lane first, then the data lane as named records.
    assert [r.seq for r in ob.take(LANE_ALERT, -1, 10)] == [10, 16]
    data = ob.take(LANE_DATA, -1, 100)
    assert [r.seq for r in data] == V1_PUBLISH_ORDER[2:]
    assert data[0].topic == "pantau/v1/s1/a1/cam1/counts"
    assert [r.bucket_seconds for r in data[:4]] == [60, 60, 180, 300]
    # New messages continue the v1 seq; acknowledged ones go.
    bucket = CountsPayload(
        bucket_start=datetime(2026, 11, 27, 9, tzinfo=timezone.utc),
        bucket_seconds=60,
        observed_seconds=60,
    )
    assert ob.enqueue([("counts", "cam1", bucket)]) == [17]
    assert ob.ack(V1_PUBLISH_ORDER) == 11 and len(ob) == 1
    ob.close()


def test_v1_outbox_relief_honours_what_v1_marked_attempted(tmp_path):
    path = v1_copy("outbox-v1.db", tmp_path / "outbox.db")
    ob = Outbox(path, agent="a1", site="s1", max_age_seconds=100 * 365 * 86400)
    ob.max_bytes = ob.size_bytes  # the next enqueue must make room by merging
    health = HealthPayload(state="ok", fps_target=5, fps_effective=5)
    assert ob.enqueue([("health", "cam1", health)]) == [17]
    report = ob.last_relief
    assert report.merged_rows == 3 and report.dropped_counts == 0
    spans = {m.seq: (m.camera, m.payload.bucket_seconds) for m in ob.messages("counts")}
    # 0 and 1 were taken by a v1 publisher (maybe at the broker): never merged; cam2's three
    # minutes were not, and became one bucket.
    assert spans == {
        0: ("cam1", 60),
        1: ("cam1", 60),
        2: ("cam1", 180),
        5: ("cam1", 300),
        11: ("cam2", 180),
    }
    ob.close()


def test_v1_central_reads_back_and_keeps_working(tmp_path):
    path = v1_copy("central-v1.db", central_db(tmp_path))
    config = central_config(tmp_path, 1883)
    res = cli("pantau-central", "status", "-c", str(config))
    assert res.returncode == 0, res.stderr
    assert {k: v for k, v in summary_of(res.stdout).items() if k in V1_SUMMARY} == V1_SUMMARY
    assert user_version(path) == len(CENTRAL_MIGRATIONS)
    st = Storage(f"sqlite:///{path}")
    summary = st.summary()
    assert {k: summary[k] for k in V1_SUMMARY} == V1_SUMMARY
    assert gap_rows(st) == V1_GAPS
    # v2 keeps seqs as ranges: v1's rows for 0-2 and 5-10 (6 declared lost) became two.
    assert seq_ranges(st) == [(0, 2), (5, 10)]
    (dead,) = st.dead_letters()
    assert dead["reason"] == "invalid JSON" and dead["payload"] == b"{not json"
    (agent,) = st.agents(heartbeat_timeout=100 * 365 * 86400)
    assert agent["state"] == "online" and agent["max_seq"] == 10
    assert agent["high_water_seq"] == 9 and agent["outbox"] == 3
    # The late seqs 3 and 4 close the v1 gap.
    assert st.store([counts(3, 3), counts(4, 4)])["stored"] == 2
    assert gap_rows(st)[0] == (3, 4, 0, 0, True) and st.summary()["open_gaps"] == 0
    assert seq_ranges(st) == [(0, 10)]
    # v3 made the rollups of what v1 stored: hourly in the migration, daily on open.
    raw = sum(r["in"] for r in st.counts() if r["rule_type"] == "line")
    hourly = st.rollup("hour", Filter())
    daily = st.rollup("day", Filter())
    assert sum(r["in"] for r in hourly) == sum(r["in"] for r in daily) == raw > 0
    v1_hour = [r for r in hourly if r["hour_start"] == "2026-11-27T08:00:00Z"]
    assert v1_hour and {r["local"] for r in v1_hour} == {"2026-11-27T16:00+08:00"}  # WITA
    st.close()


def test_a_newer_database_is_refused_clearly(tmp_path):
    outbox, central = tmp_path / "outbox-a1.db", central_db(tmp_path)
    Outbox(outbox, agent="a1", site="s1").close()
    Storage(f"sqlite:///{central}").close()
    known = {outbox: len(OUTBOX_MIGRATIONS), central: len(CENTRAL_MIGRATIONS)}
    for path, supported in known.items():
        stamp(path, supported + 1)
    before = outbox.read_bytes()
    with pytest.raises(SchemaTooNewError) as exc:
        Outbox(outbox, agent="a1", site="s1")
    assert (exc.value.path, exc.value.found, exc.value.supported) == (
        outbox,
        known[outbox] + 1,
        known[outbox],
    )
    assert outbox.read_bytes() == before  # refused without touching it
    with pytest.raises(SchemaTooNewError, match=f"schema version {known[central] + 1}, newer"):
        Storage(f"sqlite:///{central}")
    wide = {**os.environ, "COLUMNS": "1000"}  # rich would wrap the message, paths included
    for path, res in (
        (
            outbox,
            cli(
                "pantau-agent",
                "buffer",
                "status",
                "-c",
                str(agent_config(tmp_path, 1883)),
                env=wide,
            ),
        ),
        (
            central,
            cli("pantau-central", "status", "-c", str(central_config(tmp_path, 1883)), env=wide),
        ),
    ):
        assert res.returncode == 2 and "Traceback" not in res.stderr
        message = res.stderr
        assert (
            f"{path} has schema version {known[path] + 1}, newer than this release supports "
            f"(up to {known[path]})"
        ) in message


def test_migrations_apply_once_and_atomically(tmp_path):
    path = tmp_path / "x.db"
    steps = [
        Migration(1, "CREATE TABLE t (a INTEGER); -- a comment; with a semicolon\n"),
        # Neither statement could run twice: the second would fail, the first add a row.
        Migration(2, "ALTER TABLE t ADD COLUMN b INTEGER;\nINSERT INTO t VALUES (1, 2);\n"),
    ]
    for _ in range(3):
        db = connect(path, steps)
        assert schema_version(db) == 2
        assert db.execute("SELECT a, b FROM t").fetchall() == [(1, 2)]
        db.close()
    broken = [*steps, Migration(3, "CREATE TABLE u (a);\nINSERT INTO nowhere VALUES (1);\n")]
    with pytest.raises(sqlite3.OperationalError, match="nowhere"):
        connect(path, broken)
    db = connect(path, steps)
    assert schema_version(db) == 2  # the failed step left neither its table nor its stamp
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables == {"t"}
    db.close()
    with pytest.raises(ValueError, match="numbered"):
        connect(path, [steps[1]])


def test_reopening_a_v1_database_migrates_nothing_again(tmp_path):
    path = v1_copy("outbox-v1.db", tmp_path / "outbox.db")
    Outbox(path, agent="a1", site="s1").close()
    stamped = path.read_bytes()
    ob = Outbox(path, agent="a1", site="s1")
    ob.close()
    assert user_version(path) == len(OUTBOX_MIGRATIONS) and path.read_bytes() == stamped
    assert not Path(f"{path}-wal").exists() or Path(f"{path}-wal").stat().st_size == 0
    ob = Outbox(path, agent="a1", site="s1", max_age_seconds=100 * 365 * 86400)
    assert len(ob) == 11 and ob.last_seq == 16
    ob.close()


def test_db_upgrade_applies_and_a_newer_postgresql_schema_is_refused(tmp_path, storage_url):
    url = storage_url()
    config = write_central_config(tmp_path, 1883, url)
    res = cli("pantau-central", "db", "upgrade", "-c", str(config))
    assert res.returncode == 0, res.stderr
    st = Storage(url)
    latest = st.schema_version()
    assert latest in (len(CENTRAL_MIGRATIONS), len(PG_MIGRATIONS))
    assert f"schema version {latest}" in res.stdout
    st.store([counts(0, 0)])
    if url.startswith("sqlite"):
        st.close()
        stamp(Path(url.removeprefix("sqlite:///")), latest + 1)
    else:
        st.execute("UPDATE schema_version SET version = ?", (latest + 1,))
        st.close()
    wide = {**os.environ, "COLUMNS": "1000"}
    for command in ("status", "run"):
        res = cli("pantau-central", command, "-c", str(config), env=wide)
        assert res.returncode == 2 and "Traceback" not in res.stderr
        assert f"has schema version {latest + 1}, newer than this release supports " \
               f"(up to {latest})" in res.stderr  # fmt: skip
    with pytest.raises(SchemaTooNewError):
        Storage(url)


def _previous_release(url: str, buckets: list[CountsMessage]) -> None:
    """A database at the schema before packed buckets holding `buckets`: on SQLite the v9
    fixture that release wrote, on PostgreSQL (v7) the rows it wrote (a `counts` row per rule
    and class, a `buckets` row), written here."""
    day = int(V9_T0.timestamp()) // 86400 * 86400
    rows = [r for m in buckets for r in count_rows(m)]
    spans = [(m.site, m.agent, m.camera, int(m.payload.bucket_start.timestamp()),
              int(m.payload.bucket_end.timestamp()), m.msg_id) for m in buckets]  # fmt: skip
    counts_sql = f"INSERT INTO counts ({', '.join(map(quoted, COUNT_COLUMNS))}) VALUES " \
                 f"({', '.join('?' * len(COUNT_COLUMNS))})"  # fmt: skip
    buckets_sql = "INSERT INTO buckets (site, agent, camera, start_s, end_s, msg_id) VALUES " \
                  "(?, ?, ?, ?, ?, ?)"  # fmt: skip
    if url.startswith("sqlite"):
        path = Path(url.removeprefix("sqlite:///"))
        shutil.copyfile(FIXTURES / "central-v9.db", path)
        assert user_version(path) == 9
        return
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        for m in PG_MIGRATIONS[:7]:
            conn.execute(m.sql)
        conn.execute("INSERT INTO schema_version VALUES (7)")
        name = datetime.fromtimestamp(day, timezone.utc).strftime("%Y%m%d")
        conn.execute(f"CREATE TABLE counts_{name} PARTITION OF counts FOR VALUES FROM "
                     f"(to_timestamp({day})) TO (to_timestamp({day + 86400}))")  # fmt: skip
        conn.execute(f"CREATE TABLE buckets_{name} PARTITION OF buckets FOR VALUES FROM "
                     f"({day}) TO ({day + 86400})")  # fmt: skip
        with conn.cursor() as cur:
            cur.executemany(counts_sql.replace("?", "%s"), rows)
            cur.executemany(buckets_sql.replace("?", "%s"), spans)


def test_count_rows_of_the_previous_release_are_packed_and_read_back_unchanged(storage_url):
    url = storage_url()
    old = v9_buckets()
    _previous_release(url, old)
    st = Storage(url)
    assert st.schema_version() == (10 if url.startswith("sqlite") else 8)
    expected = sorted(r for m in old for r in count_rows(m))
    assert len(expected) == 7
    # One row per bucket now; the `counts` view and the export give back every count row.
    assert st.one("SELECT COUNT(*) FROM buckets") == len(old)
    assert sorted(st.fetch(f"SELECT {', '.join(map(quoted, COUNT_COLUMNS))} FROM counts")) \
        == expected  # fmt: skip
    exported = [tuple(r[c] for c in COUNT_COLUMNS) for r in st.counts()]
    assert sorted(exported) == expected
    assert [r[6] for r in exported] == sorted(r[6] for r in expected)  # oldest first
    # Admission against migrated buckets: the same bucket under a new msg_id is a duplicate,
    # other content a conflict, a finer bucket inside the merged one an overlap.
    again = old[1].model_copy(update={"msg_id": "new1", "seq": 20})
    other = old[0].model_copy(update={"msg_id": "new0", "seq": 21, "payload": old[0].payload
                                      .model_copy(update={"observed_seconds": 30.0})})  # fmt: skip
    inside, late = (
        old[0].model_copy(update={"msg_id": f"new{minute}", "seq": 20 + minute, "payload":
                                  old[0].payload.model_copy(update={"bucket_start": at})})
        for minute, at in ((5, V9_T0 + timedelta(minutes=5)), (3, V9_T0 + timedelta(minutes=3)))
    )  # fmt: skip
    batch = [Received("", b"", m) for m in (again, other, inside, late)]
    stats, dead = st.store_batch(batch, V9_STORED_AT)
    assert stats == {"stored": 1, "duplicate": 1, "dead": 2}
    assert ["conflict" in dead[0].error, "overlaps" in dead[1].error] == [True, True]
    assert len(list(st.counts(rule="door", cls="person"))) == 3  # minutes 0, 3 and merged 4
    st.close()
