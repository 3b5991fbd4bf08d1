"""Rollups, visit patterns and retention on real SQLite and real PostgreSQL: hourly and daily
totals always equal the sum of the stored buckets (random sets, merged and duplicated, in random
order, across local midnight), local days and hours follow each site's zone (also one whose
offset is not a whole hour), patterns per hour of week, and retention that drops raw rows but
keeps rollups."""

from __future__ import annotations

import json
import random
import time
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st_
from pantau.agent.wire.protocol import CountsMessage, CountsPayload, Dwell, LineCount, ZoneStats
from pantau.central.config import CentralSettings
from pantau.central.storage import CameraRef, Filter, Received, Storage

from tests.conftest import cli
from tests.datapath.conftest import write_central_config

# Two days ago, 14:00 UTC: 22:00 in Asia/Makassar, two hours before its midnight.
T0 = (datetime.now(timezone.utc) - timedelta(days=2)).replace(
    hour=14, minute=0, second=0, microsecond=0
)


def bucket(
    seq: int,
    minute: int,
    parts: int = 1,
    camera: str = "cam",
    people: int = 1,
    agent: str = "a1",
    site: str = "s1",
    msg_id: str | None = None,
) -> Received:
    msg = CountsMessage(
        msg_id=msg_id or f"{site}-{agent}-{camera}-{seq}", seq=seq, agent=agent, site=site,
        camera=camera, created_at=T0,
        payload=CountsPayload(
            bucket_start=T0 + timedelta(minutes=minute), bucket_seconds=60 * parts,
            observed_seconds=60 * parts,
            lines={"door": {"person": LineCount(**{"in": people, "out": people % 3})}},
            zones={"lobby": {"person": ZoneStats(occupancy_mean=0.5, occupancy_max=2,
                                                 dwell=Dwell(count=people % 4, mean=12.5))}},
            merged_seqs=list(range(seq, seq + parts)) if parts > 1 else [],
        ),
    )  # fmt: skip
    return Received(msg.topic, msg.encode(), msg)


def recomputed(st: Storage, zone: ZoneInfo) -> tuple[dict, dict]:
    """Hourly and daily (in, out, entries, rows) recomputed from the raw rows stored."""
    hourly: dict = defaultdict(lambda: [0, 0, 0, 0])
    daily: dict = defaultdict(lambda: [0, 0, 0, 0])
    for r in st.counts():
        start = datetime.fromisoformat(r["bucket_start"].replace("Z", "+00:00"))
        hour = start.replace(minute=0, second=0)
        key = (r["site"], r["agent"], r["camera"], r["rule"], r["class"])
        for table, period in ((hourly, hour.strftime("%Y-%m-%dT%H:%M:%SZ")),
                              (daily, hour.astimezone(zone).date().isoformat())):  # fmt: skip
            acc = table[(*key, period)]
            acc[0] += r["in"] or 0
            acc[1] += r["out"] or 0
            acc[2] += r["dwell_count"] or 0
            acc[3] += 1
    return dict(hourly), dict(daily)


def stored_rollups(st: Storage, granularity: str, period: str) -> dict:
    return {
        (r["site"], r["agent"], r["camera"], r["rule"], r["class"], r[period]):
            [r["in"], r["out"], r["entries"], r["buckets"]]
        for r in st.rollup(granularity, Filter())
    }  # fmt: skip


plans = st_.lists(
    st_.tuples(
        st_.sampled_from(["cam1", "cam2"]),
        st_.integers(0, 200),  # minute after T0: 22:00 WITA to past 01:00 the next day
        st_.sampled_from([1, 1, 1, 5, 60, 180]),  # merged from this many minutes
        st_.integers(0, 9),
    ),
    min_size=1,
    max_size=25,
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(plan=plans, seed=st_.integers(0, 2**16), dup=st_.floats(0, 0.5))
def test_rollups_equal_the_sum_of_stored_buckets(storage_url, plan, seed, dup):
    st = Storage(storage_url())
    try:
        rng = random.Random(seed)
        items, seq = [], 0
        for camera, minute, parts, people in plan:
            items.append(bucket(seq, minute - minute % parts, parts, camera, people))
            seq += parts
        items += [rng.choice(items) for _ in range(int(len(items) * dup))]  # resends
        rng.shuffle(items)
        for i in range(0, len(items), 7):
            st.store(items[i : i + 7])
        hourly, daily = recomputed(st, ZoneInfo("Asia/Makassar"))
        assert stored_rollups(st, "hour", "hour_start") == hourly
        assert stored_rollups(st, "day", "day") == daily
        assert st.summary()["count_rows"] == sum(v[3] for v in hourly.values())
    finally:
        st.close()


def test_local_days_follow_a_half_hour_zone(new_storage):
    config = CentralSettings.model_validate({"sites": {"s1": {"timezone": "Asia/Kolkata"}}})
    st = new_storage(config)
    # 18:00 and 18:45 UTC share a UTC hour, which starts at 23:30 in Kolkata (UTC+5:30): both
    # count towards that local day; 19:00 UTC is 00:30 the next day.
    st.store([bucket(0, 240), bucket(1, 285), bucket(2, 300)])
    day = (T0 + timedelta(hours=4)).astimezone(ZoneInfo("Asia/Kolkata")).date()
    days = {r["day"]: r["in"] for r in st.rollup("day", Filter(rule="door"))}
    assert days == {day.isoformat(): 2, (day + timedelta(days=1)).isoformat(): 1}
    hours = [r["local"][11:] for r in st.rollup("hour", Filter(rule="door"))]
    assert hours == ["23:30+05:30", "00:30+05:30"]
    # The same data in the default zone (WITA, UTC+8): 02:00 and 03:00 of one day.
    st.close()
    again = Storage(st.url)  # a zone change rebuilds the daily rollups on open
    assert {r["day"]: r["in"] for r in again.rollup("day", Filter(rule="door"))} == {
        (day + timedelta(days=1)).isoformat(): 3
    }
    again.close()


def weekly(storage: Storage, weeks: int, hour_utc: int, values: list[int]) -> None:
    """One bucket per week at `hour_utc` on T0's weekday, the last `weeks` weeks."""
    now = time.time()
    for w, people in enumerate(values):
        start = (T0 - timedelta(weeks=w)).replace(hour=hour_utc)
        msg = CountsMessage(
            msg_id=f"w{w}", seq=w, agent="a1", site="s1", camera="gate", created_at=start,
            payload=CountsPayload(
                bucket_start=start, bucket_seconds=60, observed_seconds=60,
                lines={"door": {"truck": LineCount(**{"in": people})}},
            ),
        )  # fmt: skip
        storage.store([Received(msg.topic, msg.encode(), msg)], now=now)


def test_visit_pattern_per_hour_of_week(new_storage, tmp_path):
    st = new_storage()
    weekly(st, 4, 1, [10, 20, 30, 40])  # 01:00 UTC = 09:00 WITA
    found = st.pattern("s1", weeks=8)
    assert found["timezone"] == "Asia/Makassar"
    local = T0.replace(hour=1).astimezone(ZoneInfo("Asia/Makassar"))
    (slot,) = [s for s in found["slots"] if s["weeks"]]
    assert (slot["weekday_en"], slot["hour"]) == (local.strftime("%A"), 9)
    assert (slot["mean"], slot["median"], slot["p90"]) == (25, 25, 37)
    assert len(found["slots"]) == 168
    assert st.pattern("s1", weeks=2)["slots"][slot_index(slot)]["weeks"] == 2
    assert st.pattern("s1", camera=CameraRef("s1", "a1", "nope"))["slots"][0]["weeks"] == 0
    config = write_central_config(tmp_path, 1883, st.url)
    res = cli("pantau-central", "patterns", "-c", str(config), "--site", "s1", "--rule", "door")
    assert res.returncode == 0, res.stderr
    assert "Asia/Makassar" in res.stdout and "Senin" in res.stdout and "Minggu" in res.stdout
    res = cli("pantau-central", "patterns", "-c", str(config), "--site", "s1", "--format",
              "json", "--camera", "s1/a1/gate", "--class", "truck")  # fmt: skip
    assert json.loads(res.stdout)["slots"][slot_index(slot)]["mean"] == 25
    res = cli("pantau-central", "patterns", "-c", str(config), "--site", "s1", "--camera", "gate")
    assert res.returncode == 2 and "SITE/AGENT/CAMERA" in res.stderr


def slot_index(slot: dict) -> int:
    days = ["Senin", "Selasa", "Rabu", "Kamis", "Jumat", "Sabtu", "Minggu"]
    return days.index(slot["weekday"]) * 24 + slot["hour"]


def test_counts_cli_granularities(new_storage, tmp_path):
    st = new_storage()
    st.store([bucket(i, i * 30, camera="cam1", people=2) for i in range(6)])  # 22:00-00:30 WITA
    st.store([bucket(0, 0, camera="cam1", agent="a2", people=5)])
    config = write_central_config(tmp_path, 1883, st.url)

    def run(*args: str) -> list[dict]:
        res = cli("pantau-central", "counts", "-c", str(config), "--format", "json", *args)
        assert res.returncode == 0, res.stderr
        return json.loads(res.stdout)

    cam = ("--camera", "s1/a1/cam1", "--rule", "door")
    assert [r["in"] for r in run("--granularity", "hour", *cam)] == [4, 4, 4]
    day = T0.astimezone(ZoneInfo("Asia/Makassar")).date()
    assert {r["day"]: r["in"] for r in run("--granularity", "day", *cam)} == {
        day.isoformat(): 8,
        (day + timedelta(days=1)).isoformat(): 4,
    }
    assert len(run("--granularity", "bucket", *cam)) == 6
    assert sum(r["in"] for r in run("--granularity", "hour", "--rule", "door")) == 17
    since = (T0 + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert [r["in"] for r in run("--granularity", "hour", "--from", since, *cam)] == [4, 4]
    res = cli("pantau-central", "counts", "-c", str(config), "--format", "csv", *cam)
    assert res.stdout.splitlines()[0].startswith("site,agent,camera,hour_start")
    res = cli("pantau-central", "counts", "-c", str(config), "--granularity", "day", "--from",
              "yesterday")  # fmt: skip
    assert res.returncode == 2 and "local date" in res.stderr


def test_retention_drops_raw_rows_and_keeps_rollups(new_storage):
    st = new_storage()
    now = time.time()
    old = T0 - timedelta(days=100)
    msgs = []
    for i, start in enumerate((old, T0)):
        msg = CountsMessage(
            msg_id=f"r{i}", seq=i, agent="a1", site="s1", camera="cam", created_at=start,
            payload=CountsPayload(bucket_start=start, bucket_seconds=60, observed_seconds=60,
                                  lines={"door": {"person": LineCount(**{"in": 3})}}),
        )  # fmt: skip
        msgs.append(Received(msg.topic, msg.encode(), msg))
    st.store(msgs[:1], now=now - 99 * 86400)  # received long ago: its msg_id expires too
    assert st.summary()["count_rows"] == 1
    assert st.maintain(now - 99 * 86400)["count_rows"] == 0  # not yet 90 days old
    # Storing at `now` sees to retention first (at most an hour after the last time).
    st.store(msgs[1:], now=now)
    after = st.summary()
    assert (after["count_rows"], after["buckets"], after["messages"]) == (1, 1, 1)
    assert after["first_bucket"] == T0.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert [r["bucket_start"] for r in st.counts()] == [T0.strftime("%Y-%m-%dT%H:%M:%SZ")]
    assert sum(r["in"] for r in st.rollup("hour", Filter())) == 6  # rollups are kept
    assert st.maintain(now)["count_rows"] == 0
