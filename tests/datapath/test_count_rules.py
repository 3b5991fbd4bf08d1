"""Count rules at central, on real SQLite and real PostgreSQL: a threshold in a night schedule
in WITA across midnight, `max`, hold and clear giving one alert with a start and an end, the
unusual hour against the visit pattern in both directions once enough weeks exist, timers that
survive a restart, one evaluator among workers, and `pantau-central rules check`."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone

import pytest
from pantau.agent.wire.protocol import CountsMessage, CountsPayload, LineCount
from pantau.central.config import CentralSettings
from pantau.central.countrules import evaluate
from pantau.central.storage import Received, Storage
from pydantic import ValidationError

from tests.conftest import cli
from tests.datapath.conftest import write_central_config

# Yesterday (UTC) at 00:00 UTC = 08:00 WITA: every test time is in the past, as central wants.
DAY0 = (datetime.now(timezone.utc) - timedelta(days=1)).replace(
    hour=0, minute=0, second=0, microsecond=0
)
WITA = timezone(timedelta(hours=8))


def wita(hour: int, minute: int = 0, day: int = 0) -> datetime:
    """A time on DAY0's WITA date (+ day)."""
    local = DAY0.astimezone(WITA).replace(hour=0) + timedelta(days=day)
    return local.replace(hour=hour, minute=minute)


class Agent:
    """Stores counts buckets of one camera as its agent sends them."""

    def __init__(self, st: Storage, camera: str = "road") -> None:
        self.st, self.camera, self.seq = st, camera, 0

    def bucket(
        self, start: datetime, n: int, cls: str = "truck", seconds: int = 60,
        received: float | None = None,
    ) -> None:  # fmt: skip
        msg = CountsMessage(
            msg_id=f"{self.camera}-{self.seq}", seq=self.seq, agent="a1", site="s1",
            camera=self.camera, created_at=start,
            payload=CountsPayload(
                bucket_start=start, bucket_seconds=seconds, observed_seconds=seconds,
                lines={"road": {cls: LineCount(**{"in": n, "out": 0})}},
            ),
        )  # fmt: skip
        self.seq += 1
        now = start.timestamp() + seconds if received is None else received
        assert self.st.store([Received(msg.topic, msg.encode(), msg)], now=now)["stored"] == 1


def settings(**rules) -> CentralSettings:
    return CentralSettings(count_rules=rules)


TRUCKS = {"site": "s1", "camera": "a1/road", "rule": "road", "classes": ["truck"],
          "window": "10m", "min": 1, "schedule": "22:00-05:00", "severity": "critical"}  # fmt: skip


def states(st: Storage) -> list[tuple]:
    return [(a["rule"], a["state"], a["raised_at"], a["cleared_at"]) for a in st.alerts()]


def iso(t: datetime) -> str:
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_threshold_at_night_in_wita_across_midnight(new_storage):
    st = new_storage(settings(trucks_mining_road=TRUCKS))
    cam = Agent(st)
    # A truck at noon: outside the schedule, nothing.
    cam.bucket(wita(12, 0), 1)
    assert evaluate(st, wita(12, 5).timestamp()) == []
    # 23:30 WITA (15:30 UTC): a truck in the last 10 minutes raises one critical alert.
    cam.bucket(wita(23, 25), 1)
    (raised,) = evaluate(st, wita(23, 30).timestamp())
    assert (raised["source"], raised["type"], raised["camera_path"], raised["severity"]) == (
        "central", "count_threshold", "s1/a1/road", "critical")  # fmt: skip
    assert raised["details"]["count"] == 1 and raised["details"]["timezone"] == "Asia/Makassar"
    # After midnight, still trucks: the same alert goes on.
    cam.bucket(wita(0, 25, day=1), 2)
    assert evaluate(st, wita(0, 30, day=1).timestamp()) == []
    # 01:00: no truck in the last 10 minutes: cleared (clear_after 0), ended then.
    (cleared,) = evaluate(st, wita(1, 0, day=1).timestamp())
    assert cleared["id"] == raised["id"] and cleared["cleared_by"] == "central: rule"
    assert states(st) == [("trucks_mining_road", "cleared", iso(wita(23, 30)),
                           iso(wita(1, 0, day=1)))]  # fmt: skip
    # A truck at 04:55 raises again, and 05:00 (the schedule's end) clears at once.
    cam.bucket(wita(4, 50, day=1), 1)
    assert len(evaluate(st, wita(4, 55, day=1).timestamp())) == 1
    (ended,) = evaluate(st, wita(5, 0, day=1).timestamp())
    assert ended["cleared_at"] == iso(wita(5, 0, day=1))
    events = [(e.action, e.body["id"]) for e in st.events_after(0, kinds=["alerts"])]
    assert [a for a, _ in events] == ["raise", "clear", "raise", "clear"]


def test_max_with_hold_and_clear_is_one_alert_with_start_and_end(new_storage):
    crowd = {"site": "s1", "camera": "s1/a1/gate", "classes": ["person"], "window": "5m",
             "max": 10, "hold": "2m", "clear_after": "3m"}  # fmt: skip
    st = new_storage(settings(gate_crowd=crowd))
    cam = Agent(st, "gate")
    # 4 people a minute until 10:04, then none but a burst of 12 at 10:08.
    for k in range(30):
        start = wita(9, 50) + timedelta(minutes=k)
        cam.bucket(start, 4 if start <= wita(10, 4) else 12 if start == wita(10, 8) else 0,
                   "person")  # fmt: skip
    changes = []
    for m in range(1, 21):
        changes += [(m, c["state"]) for c in evaluate(st, wita(10, m).timestamp())]
    # On from 10:01 (the first look), raised after the 2 min hold; off at 10:08, on again at
    # 10:09 (the burst) within the 3 min clear time, off from 10:14: cleared at 10:17.
    assert changes == [(3, "open"), (17, "cleared")]
    (alert,) = st.alerts()
    assert (alert["raised_at"], alert["cleared_at"]) == (iso(wita(10, 1)), iso(wita(10, 14)))
    assert alert["details"]["max"] == 10 and alert["details"]["end"]["count"] == 0


def test_an_episode_an_operator_cleared_is_not_raised_again(new_storage):
    st = new_storage(settings(trucks=TRUCKS))
    cam = Agent(st)
    for minute in (0, 5, 10, 25):
        cam.bucket(wita(23, minute), 1)
    (raised,) = evaluate(st, wita(23, 3).timestamp())
    st.clear_alert(raised["id"], "sari", "our own truck", now=wita(23, 4).timestamp())
    assert evaluate(st, wita(23, 8).timestamp()) == []  # the same episode goes on
    assert evaluate(st, wita(23, 13).timestamp()) == []
    assert evaluate(st, wita(23, 24).timestamp()) == []  # gone (no truck 23:14-23:24)
    (again,) = evaluate(st, wita(23, 27).timestamp())  # a new episode: a new alert
    assert again["id"] != raised["id"] and again["raised_at"] == iso(wita(23, 27))


def _hour_bucket(cam: Agent, start: datetime, n: int) -> None:
    cam.bucket(start, n, "car", seconds=3600)


@pytest.mark.parametrize("current, direction", [(40, "above"), (0, "below")])
def test_unusual_hour_in_both_directions_needs_history(new_storage, current, direction):
    rule = {"kind": "unusual", "site": "s1", "camera": "a1/road", "ratio": 2,
            "min_difference": 10, "min_weeks": 4, "weeks": 8}  # fmt: skip
    st = new_storage(settings(road_unusual=rule))
    cam = Agent(st)
    hour = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) - timedelta(
        hours=3
    )
    for week in (3, 2, 1):
        _hour_bucket(cam, hour - timedelta(weeks=week), 15)
    _hour_bucket(cam, hour, current)
    after = (hour + timedelta(hours=1, minutes=5)).timestamp()
    assert evaluate(st, after) == []  # 3 weeks of history, 4 needed
    _hour_bucket(cam, hour - timedelta(weeks=4), 15)
    (raised,) = evaluate(st, after)
    assert raised["type"] == "unusual_activity"
    details = raised["details"]
    assert (details["direction"], details["count"], details["usual"], details["weeks"]) == (
        direction, current, 15.0, 4)  # fmt: skip
    # The next hour is usual: cleared.
    _hour_bucket(cam, hour + timedelta(hours=1), 15)
    for week in (1, 2, 3, 4):
        _hour_bucket(cam, hour + timedelta(hours=1) - timedelta(weeks=week), 15)
    (cleared,) = evaluate(st, after + 3600)
    assert cleared["state"] == "cleared" and cleared["details"]["end"]["direction"] is None


def test_an_unobserved_hour_is_not_quiet(new_storage):
    rule = {"kind": "unusual", "site": "s1", "camera": "a1/road", "min_weeks": 1}
    st = new_storage(settings(road_unusual=rule))
    cam = Agent(st)
    hour = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) - timedelta(
        hours=3
    )
    _hour_bucket(cam, hour - timedelta(weeks=1), 50)
    cam.bucket(hour, 0, "car", seconds=600)  # ten minutes observed of the hour: not judged
    assert evaluate(st, (hour + timedelta(hours=1)).timestamp()) == []


def test_timers_survive_a_restart_and_one_worker_evaluates(new_storage, storage_url):
    held = {**TRUCKS, "hold": "10m"}
    url = storage_url()
    st = Storage(url, settings(trucks=held))
    try:
        Agent(st).bucket(wita(23, 0), 1)
        assert evaluate(st, wita(23, 5).timestamp()) == []  # on since 23:05, held 10 min
    finally:
        st.close()
    st = Storage(url, settings(trucks=held))  # a restarted central goes on
    try:
        cam = Agent(st)
        cam.seq = 1
        cam.bucket(wita(23, 10), 1)
        (raised,) = evaluate(st, wita(23, 15).timestamp())
        assert raised["raised_at"] == iso(wita(23, 5))
        if url.startswith("postgres"):
            other = Storage(url, settings(trucks=held))
            try:
                other.begin()
                assert other.try_lock("count-rules")
                cam.bucket(wita(23, 20), 1)
                assert evaluate(st, wita(23, 45).timestamp()) == []  # the other one evaluates
                other.rollback()
            finally:
                other.close()
        assert evaluate(st, wita(23, 45).timestamp())[0]["state"] == "cleared"
    finally:
        st.close()


def test_rule_config_is_checked():
    with pytest.raises(ValidationError, match="exactly one of min"):
        settings(r={"site": "s1", "window": "10m"})
    with pytest.raises(ValidationError, match="not 'HH:MM-HH:MM'"):
        settings(r={"site": "s1", "min": 1, "schedule": "night"})
    with pytest.raises(ValidationError, match="not in site"):
        settings(r={"site": "s1", "min": 1, "camera": "s2/a1/cam"})
    with pytest.raises(ValidationError, match="not a duration"):
        settings(r={"site": "s1", "min": 1, "window": "ten minutes"})
    assert settings(r={"site": "s1", "min": 1, "window": "1h"}).count_rules["r"].window == 3600


def test_rules_check_cli_evaluates_now(tmp_path, storage_url):
    url = storage_url()
    always = {"site": "s1", "camera": "a1/road", "window": "2d", "min": 1}
    st = Storage(url)
    Agent(st).bucket(DAY0 + timedelta(hours=12), 3, received=time.time())  # heard from now
    st.close()
    config = str(write_central_config(tmp_path, 1883, url, count_rules={"any_truck": always}))
    first = cli("pantau-central", "rules", "check", "-c", config, "--format", "json")
    assert first.returncode == 0, first.stderr
    (raised,) = json.loads(first.stdout)
    assert (raised["rule"], raised["state"], raised["details"]["count"]) == ("any_truck", "open", 3)
    again = cli("pantau-central", "rules", "check", "-c", config, "--format", "json")
    assert json.loads(again.stdout) == []
    listed = cli("pantau-central", "alerts", "--open", "-c", config, "--format", "json")
    assert [a["source"] for a in json.loads(listed.stdout)] == ["central"]
