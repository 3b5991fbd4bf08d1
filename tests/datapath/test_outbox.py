"""The outbox on real SQLite: durability of seq, order, merge under pressure, drops with an
alert that names what was lost, and a full disk (a capped file, and a real filesystem that
another process fills)."""

from __future__ import annotations

import itertools
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from pantau.agent.delivery.outbox import LANE_ALERT, LANE_DATA, Outbox, OutboxFullError
from pantau.agent.wire.protocol import AlertPayload, CountsPayload, LineCount

T0 = datetime.now(timezone.utc).replace(second=0, microsecond=0) - timedelta(hours=30)


def counts(i: int, camera: str = "cam", n_in: int = 1) -> tuple[str, str, CountsPayload]:
    return (
        "counts",
        camera,
        CountsPayload(
            bucket_start=T0 + timedelta(minutes=i),
            bucket_seconds=60,
            observed_seconds=60,
            lines={"door": {"person": LineCount(**{"in": n_in, "out": i % 3})}},
        ),
    )


def alert(i: int) -> tuple[str, str, AlertPayload]:
    return (
        "alerts",
        "cam",
        AlertPayload(alert_id=f"a{i}", type="crowd", state="raised", started_at=T0),
    )


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 8 MiB filesystem (tmpfs) of its own, unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def fill_disk(folder: Path) -> Path:
    """Fill the filesystem of `folder` to the last byte from another process (dd)."""
    filler = folder / "filler"
    done = subprocess.run(
        ["dd", "if=/dev/zero", f"of={filler}", "bs=4k"], capture_output=True, text=True
    )
    assert done.returncode != 0 and "No space left" in done.stderr, done.stderr
    assert shutil.disk_usage(folder).free < 4096
    return filler


def total_in(ob: Outbox) -> int:
    return sum(m.payload.lines["door"]["person"].in_ for m in ob.messages("counts"))


def test_seq_survives_reopen_and_alerts_go_first(tmp_path):
    ob = Outbox(tmp_path / "o.db", agent="a", site="s")
    assert ob.enqueue([counts(0), counts(1)]) == [0, 1]
    ob.close()
    ob = Outbox(tmp_path / "o.db", agent="a", site="s")
    assert ob.enqueue([alert(0)]) == [2]
    assert [r.seq for r in ob.take(LANE_ALERT, -1, 10)] == [2]
    assert [r.seq for r in ob.take(LANE_DATA, -1, 10)] == [0, 1]
    assert ob.ack([0, 2, 99]) == 2
    assert len(ob) == 1 and ob.last_seq == 2


def test_merge_under_cap_keeps_totals_and_skips_attempted(tmp_path):
    ob = Outbox(tmp_path / "o.db", agent="a", site="s")
    ob.enqueue([counts(i, n_in=i) for i in range(300)])
    attempted = ob.take(LANE_DATA, -1, 3)  # possibly at the broker: must never be merged
    ob.max_bytes = ob.size_bytes // 3
    ob.enqueue([counts(300, n_in=300)])
    assert ob.last_relief.merged_rows > 0 and ob.last_relief.dropped_counts == 0
    assert ob.size_bytes <= ob.max_bytes
    assert total_in(ob) == sum(range(301))
    kept = {m.seq: m for m in ob.messages("counts")}
    for row in attempted:
        assert kept[row.seq].payload.bucket_seconds == 60
    coarse = [m for m in kept.values() if m.payload.bucket_seconds > 60]
    assert coarse and all(m.payload.merged_seqs for m in coarse)
    # No two stored buckets overlap.
    spans = sorted((m.payload.bucket_start, m.payload.bucket_end) for m in kept.values())
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))


def test_drop_only_when_merging_is_not_enough_and_say_what_was_lost(tmp_path):
    ob = Outbox(tmp_path / "o.db", agent="a", site="s")
    ob.enqueue([counts(i) for i in range(120)])
    ob.enqueue([alert(1)])
    ob.max_bytes = 1500
    ob.enqueue([counts(120)])
    report = ob.last_relief
    assert report.dropped_counts > 0 and report.dropped_alerts == 0
    overflow = [m for m in ob.messages("alerts") if m.payload.type == "buffer_overflow"]
    assert len(overflow) == 1
    details = overflow[0].payload.details
    assert details["lost_messages"] == report.dropped_counts
    assert details["lost_from"] == T0.strftime("%Y-%m-%dT%H:%M:%SZ")
    lost = sum(b - a + 1 for a, b in details["lost_seqs"])
    assert lost == report.dropped_counts
    # The older crowd alert outranks counts and is still there.
    assert any(m.payload.type == "crowd" for m in ob.messages("alerts"))


def test_age_bound_drops_old_counts_with_alert(tmp_path):
    ob = Outbox(tmp_path / "o.db", agent="a", site="s", max_age_seconds=3600)
    ob.enqueue([counts(i) for i in range(10)])  # 30 hours old
    ob.enqueue(
        [
            (
                "counts",
                "cam",
                CountsPayload(
                    bucket_start=datetime.now(timezone.utc), bucket_seconds=60, observed_seconds=60
                ),
            )
        ]
    )
    assert ob.last_relief.dropped_counts == 10
    assert [m.payload.type for m in ob.messages("alerts")] == ["buffer_overflow"]


def test_disk_full_makes_room_or_refuses_without_losing_stored(tmp_path):
    ob = Outbox(tmp_path / "o.db", agent="a", site="s")
    ob.enqueue([counts(i) for i in range(200)])
    # SQLITE_FULL exactly as a full disk reports it: cap the file at its current pages.
    pages = ob._db.execute("PRAGMA page_count").fetchone()[0]
    ob._db.execute(f"PRAGMA max_page_count = {pages}")
    accepted = 200
    try:
        ob.enqueue([counts(200 + i) for i in range(400)])
        accepted += 400
    except OutboxFullError as exc:
        assert "full" in str(exc)
    ob._db.execute("PRAGMA max_page_count = 1073741823")
    check = sqlite3.connect(tmp_path / "o.db").execute("PRAGMA integrity_check").fetchone()
    assert check == ("ok",)
    # Every accepted minute (one crossing each) is either still stored or reported lost by a
    # buffer_overflow alert: nothing vanished silently.
    lost = 0
    for m in ob.messages("alerts"):
        d = m.payload.details
        if "lost_from" in d:
            lost += (
                datetime.fromisoformat(d["lost_to"]) - datetime.fromisoformat(d["lost_from"])
            ).total_seconds() // 60
    assert total_in(ob) + lost == accepted
    ob.enqueue([counts(900)])
    assert len(ob) == len(ob.messages())


def test_unknown_kind_is_a_programming_error(tmp_path):
    ob = Outbox(tmp_path / "o.db", agent="a", site="s")
    with pytest.raises(KeyError):
        ob.enqueue([("video", "cam", {})])
    assert len(ob) == 0


def test_other_sqlite_errors_are_not_taken_for_a_full_disk(tmp_path):
    ob = Outbox(tmp_path / "o.db", agent="a", site="s")
    ob.enqueue([counts(0)])
    ob._db.execute("PRAGMA busy_timeout = 0")
    other = sqlite3.connect(tmp_path / "o.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another writer holds the lock: "database is locked"
    with pytest.raises(sqlite3.OperationalError) as exc:
        ob.enqueue([counts(1)])
    assert "locked" in str(exc.value)
    other.execute("ROLLBACK")
    assert ob.last_relief.dropped_counts == 0 and ob.enqueue([counts(1)]) == [1]


def test_a_disk_another_process_filled_leads_to_merge_then_drop_never_a_crash(small_disk):
    ob = Outbox(small_disk / "o.db", agent="a", site="s")
    assert ob.ballast.is_file()
    ob.enqueue([counts(i) for i in range(300)])
    filler = fill_disk(small_disk)
    merged = dropped = refused = 0
    for i in range(300, 1500, 20):
        try:  # anything but OutboxFullError fails the test
            ob.enqueue([counts(j) for j in range(i, i + 20)])
        except OutboxFullError:
            refused += 1
            continue
        merged += ob.last_relief.merged_rows
        dropped += ob.last_relief.dropped_counts
        # Publishing goes on too: marking and deleting need the journal as well.
        ob.ack(r.seq for r in ob.take(LANE_DATA, -1, 5))
    assert refused == 0 and merged > 0 and dropped > 0
    overflow = [m.payload for m in ob.messages("alerts") if m.payload.type == "buffer_overflow"]
    assert overflow and overflow[-1].details["lost_messages"] > 0
    assert not ob.ballast.exists()  # spent on making room

    os.remove(filler)  # space comes back: the outbox stores again and keeps its ballast
    before = len(ob)
    ob.enqueue([counts(2000 + i) for i in range(100)])
    assert len(ob) == before + 100 and ob.ballast.is_file()
    ob.close()
    check = sqlite3.connect(small_disk / "o.db").execute("PRAGMA integrity_check").fetchone()
    assert check == ("ok",)


def test_acks_on_a_full_disk_are_deferred_never_reported_lost(small_disk):
    ob = Outbox(small_disk / "o.db", agent="a", site="s")
    ob.enqueue([counts(i) for i in range(210)])
    sent = ob.take(LANE_DATA, -1, 200)
    ob.ballast.unlink()  # no ballast: even a delete finds no room
    filler = fill_disk(small_disk)
    assert ob.ack(r.seq for r in sent) == 0  # no exception; deleted later
    with pytest.raises(OutboxFullError):  # the publisher waits and takes them again
        ob.take(LANE_DATA, sent[-1].seq, 10)
    os.remove(filler)
    ob.enqueue([counts(210)])
    assert len(ob) == 11
    assert [r.seq for r in ob.take(LANE_DATA, sent[-1].seq, 20)] == list(range(200, 211))
    assert not ob.messages("alerts")  # the delivered 200 went without a loss report
