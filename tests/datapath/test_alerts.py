"""Alert objects at central, on real SQLite and real PostgreSQL: one object per condition
episode (raised, updated by a restarted agent's re-announce, acknowledged, cleared by the
agent, by central when the camera is silent, or by an operator), each change one event; scope
filtering as Scope.covers; stored alert messages migrated into objects; the agent's outbox
re-announcing its open alerts after a restart; and the `alerts` CLI."""

from __future__ import annotations

import json
import sqlite3
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from pantau.agent.delivery.outbox import Outbox
from pantau.agent.wire.protocol import AlertMessage, AlertPayload, format_time
from pantau.central.config import CentralSettings
from pantau.central.scope import Scope
from pantau.central.storage import AlertNotFound, CameraRef, Received, Storage

from tests.conftest import cli
from tests.datapath.conftest import write_central_config
from tests.datapath.test_storage import T0, counts

FIELDS = {"id", "alert_id", "source", "site", "agent", "camera", "camera_path", "jurisdiction",
          "type", "severity", "rule", "state", "raised_at", "updated_at", "cleared_at",
          "cleared_by", "acknowledged_at", "acknowledged_by", "ack_note", "details"}  # fmt: skip


def alert(
    seq: int, alert_id: str, state: str = "raised", *, type: str = "intrusion",
    camera: str = "cam", agent: str = "a1", rule: str | None = "gate", minute: int = 0,
    details: dict | None = None, msg_id: str | None = None,
) -> Received:  # fmt: skip
    start = T0 + timedelta(minutes=minute)
    msg = AlertMessage(
        msg_id=msg_id or f"{agent}-al{seq}", seq=seq, agent=agent, site="s1", camera=camera,
        created_at=start + timedelta(seconds=5),
        payload=AlertPayload(
            alert_id=alert_id, type=type, state=state, severity="critical", started_at=start,
            ended_at=start + timedelta(minutes=1) if state == "cleared" else None, rule=rule,
            details=details or {"zone": rule},
        ),
    )  # fmt: skip
    return Received(msg.topic, msg.encode(), msg)


def alert_events(st: Storage) -> list[tuple[str, int, str]]:
    return [(e.action, e.body["id"], e.body["state"]) for e in st.events_after(0, kinds=["alerts"])]


def test_one_object_per_episode_with_its_life(new_storage):
    st = new_storage()
    st.store([counts(0, 0), alert(1, "x1")])
    (a,) = st.alerts()
    assert set(a) >= FIELDS
    assert (a["source"], a["camera_path"], a["type"], a["rule"], a["state"]) == (
        "agent",
        "s1/a1/cam",
        "intrusion",
        "gate",
        "open",
    )
    assert a["raised_at"] == format_time(T0) and a["details"] == {"zone": "gate"}
    assert st.store([alert(1, "x1")])["duplicate"] == 1  # a resend: nothing changes
    st.ack_alert(a["id"], "budi", "unit on the way", now=T0.timestamp() + 60)
    acked = st.alert(a["id"])
    assert acked is not None
    assert (acked["acknowledged_by"], acked["ack_note"], acked["state"]) == (
        "budi",
        "unit on the way",
        "open",
    )
    st.store([alert(2, "x1", "cleared")])
    done = st.alert(a["id"])
    assert done is not None
    assert (done["state"], done["cleared_by"]) == ("cleared", "agent")
    assert done["cleared_at"] == format_time(T0 + timedelta(minutes=1))
    assert alert_events(st) == [("raise", a["id"], "open"), ("ack", a["id"], "open"),
                                ("clear", a["id"], "cleared")]  # fmt: skip
    keys = [e.key for e in st.events_after(0, kinds=["alerts"])]
    assert keys == [f"alert:{a['id']}:raise:1", f"alert:{a['id']}:ack:2",
                    f"alert:{a['id']}:clear:3"]  # fmt: skip
    # A new episode of the same condition is a new object.
    st.store([alert(3, "x2", minute=10)])
    assert [(x["alert_id"], x["state"]) for x in st.alerts()] == [("x2", "open"),
                                                                 ("x1", "cleared")]  # fmt: skip
    assert [x["alert_id"] for x in st.alerts(open_only=True)] == ["x2"]


def test_a_restarted_agent_updates_the_open_alert(new_storage):
    st = new_storage()
    st.store([alert(1, "x1")])
    # The agent restarted without knowing x1 and raises the same condition as x2.
    st.store([alert(2, "x2", minute=3, details={"zone": "gate", "run": 2})])
    (a,) = st.alerts()
    assert (a["alert_id"], a["state"], a["details"]) == ("x1", "open", {"zone": "gate", "run": 2})
    # The old id is never cleared (that agent run is gone); the new one clears the object.
    st.store([alert(3, "x2", "cleared", minute=3)])
    assert st.alerts()[0]["state"] == "open"  # x1 is still open on its own
    st.clear_alert(a["id"], "sari", "checked on site", now=time.time())
    assert [e[0] for e in alert_events(st)] == ["raise", "update", "clear"]
    assert st.alert(a["id"])["cleared_by"] == "operator: sari"  # type: ignore[index]


def test_loitering_of_two_tracks_is_one_alert_until_both_leave(new_storage):
    st = new_storage()
    st.store([alert(1, "t1", type="loitering"), alert(2, "t2", type="loitering")])
    st.store([alert(3, "t1", "cleared", type="loitering")])
    assert st.alerts()[0]["state"] == "open"
    st.store([alert(4, "t2", "cleared", type="loitering")])
    assert [a["state"] for a in st.alerts()] == ["cleared"]


def test_a_clear_before_its_raise_makes_one_cleared_object(new_storage):
    st = new_storage()
    st.store([alert(2, "x1", "cleared")])
    st.store([alert(1, "x1")])
    (a,) = st.alerts()
    assert (a["state"], a["cleared_by"]) == ("cleared", "agent")


def test_central_clears_alerts_of_a_silent_camera_and_a_reannounce_reopens(new_storage):
    st = new_storage(CentralSettings(alerts={"offline_clear_after": "15m"}))
    now = time.time()
    st.store([alert(1, "x1"), alert(2, "off", type="camera_offline", rule=None)], now=now)
    assert st.clear_silent_alerts(now + 14 * 60) == []
    cleared = st.clear_silent_alerts(now + 16 * 60)
    assert sorted(a["type"] for a in cleared) == ["camera_offline", "intrusion"]
    assert {a["cleared_by"] for a in st.alerts()} == {"central: offline"}
    # Back after a restart, the agent re-announces x1 (the same message content): open again.
    assert st.store([alert(1, "x1", msg_id="again")], now=now + 20 * 60)["duplicate"] == 1
    assert {(a["type"], a["state"]) for a in st.alerts()} == {
        ("intrusion", "open"),
        ("camera_offline", "cleared"),
    }
    assert [e[0] for e in alert_events(st)][-1] == "raise"


def test_camera_health_offline_clears_all_but_its_offline_alert(new_storage):
    st = new_storage(CentralSettings(alerts={"offline_clear_after": 600}))
    now = time.time()
    st.store([alert(1, "x1"), alert(2, "off", type="camera_offline", rule=None)], now=now)
    st.execute("UPDATE cameras SET health = 'offline', health_at = ?",
               (format_time(datetime.fromtimestamp(now, timezone.utc)),))  # fmt: skip
    st.execute("UPDATE cameras SET last_seen = ?", (now + 3000,))
    st.execute("UPDATE agents SET last_seen = ?", (now + 3000,))
    cleared = st.clear_silent_alerts(now + 700)
    assert [a["type"] for a in cleared] == ["intrusion"]


def test_scope_and_filters_are_exact(new_storage):
    st = new_storage()
    st.store([alert(1, "x1", camera="c1"), alert(2, "x2", camera="c2", type="crowd"),
              alert(3, "y1", agent="a2", camera="c1", minute=1)])  # fmt: skip
    st.execute("UPDATE cameras SET jurisdiction = 'polres-a' WHERE camera = 'c1'")
    st.execute("UPDATE cameras SET jurisdiction = 'polres-b' WHERE camera = 'c2'")
    everything = st.alerts()
    assert len(everything) == 3 and everything[0]["alert_id"] == "y1"  # newest first
    scopes = [Scope(), Scope.of(jurisdictions=["polres-a"]), Scope.of(sites=["s2"]),
              Scope.of(cameras=["s1/a1/c2"]), Scope.of(sites=["s1"], jurisdictions=["polres-b"]),
              Scope(jurisdictions=frozenset())]  # fmt: skip
    for scope in scopes:
        expected = {
            a["id"]
            for a in everything
            if scope.covers(a["site"], a["agent"], a["camera"], a["jurisdiction"])
        }
        assert {a["id"] for a in st.alerts(scope)} == expected, scope
    assert [a["alert_id"] for a in st.alerts(jurisdiction="polres-b")] == ["x2"]
    assert [a["alert_id"] for a in st.alerts(type="crowd")] == ["x2"]
    assert st.alerts(site="s9") == []
    assert len(st.alerts(since=format_time(T0 + timedelta(seconds=30)))) == 1
    assert len(st.alerts(until=format_time(T0 + timedelta(seconds=30)), limit=1)) == 1


def test_unknown_alert_ids_are_clear_errors(new_storage):
    st = new_storage()
    assert st.alert(99) is None
    with pytest.raises(AlertNotFound, match="no alert with id 99"):
        st.ack_alert(99, "budi")
    with pytest.raises(AlertNotFound):
        st.clear_alert(99, "budi")
    assert st.events_after(0) == []


def _v5_database(url: str) -> None:
    """A database at the schema before alert objects (SQLite v5, PostgreSQL v3)."""
    if url.startswith("sqlite"):
        from pantau.agent.wire.migrations import connect
        from pantau.central.storage.sqlite_schema import MIGRATIONS

        connect(Path(url.removeprefix("sqlite:///")), MIGRATIONS[:5]).close()
        return
    import psycopg
    from pantau.central.storage.postgres_schema import MIGRATIONS as PG

    with psycopg.connect(url, autocommit=True) as conn:
        for m in PG[:3]:
            conn.execute(m.sql)
        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        conn.execute("INSERT INTO schema_version VALUES (3)")


def test_stored_alert_messages_become_objects(storage_url):
    url = storage_url()
    _v5_database(url)
    rows = [("x1", "raised", 0), ("x1", "cleared", 1), ("x2", "raised", 2), ("x3", "raised", 3),
            ("lone", "cleared", 4)]  # fmt: skip
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
    else:
        import psycopg

        conn = psycopg.connect(url, autocommit=True)  # type: ignore[assignment]
    mark = "?" if url.startswith("sqlite") else "%s"
    for alert_id, state, minute in rows:
        at = format_time(T0 + timedelta(minutes=minute))
        conn.execute(
            f"INSERT INTO alerts VALUES ({', '.join([mark] * 13)})",
            ("s1", "a1", "cam", alert_id, state, "intrusion", "critical", at,
             at if state == "cleared" else None, "gate", "{}", at, f"m-{alert_id}-{state}"),
        )  # fmt: skip
    conn.commit()
    conn.close()
    st = Storage(url)
    try:
        got = {a["alert_id"]: (a["state"], a["cleared_by"]) for a in st.alerts()}
        # x2 and x3 were the same condition raised by two agent runs: the newest stays open.
        assert got == {"x1": ("cleared", "agent"), "x2": ("cleared", "central: superseded"),
                       "x3": ("open", None), "lone": ("cleared", "agent")}  # fmt: skip
        st.store([alert(9, "x3", "cleared")])  # the agent clears the migrated open one
        assert st.alerts(open_only=True) == []
    finally:
        st.close()


def test_restarted_outbox_reannounces_and_central_matches(tmp_path, new_storage):
    """The agent's real outbox: an alert open when the agent stopped is re-raised with the same
    alert_id (central: a duplicate, the object stays open) when the condition still holds, and
    cleared when it is not re-raised within the re-announce time."""
    st = new_storage()
    path = tmp_path / "outbox.db"
    t0 = T0.timestamp()

    def raise_(alert_id: str, rule: str, t: float) -> tuple[str, str, AlertPayload]:
        return ("alerts", "cam", AlertPayload(
            alert_id=alert_id, type="intrusion", state="raised", severity="critical",
            started_at=datetime.fromtimestamp(t, timezone.utc), rule=rule))  # fmt: skip

    def deliver(ob: Outbox) -> None:
        msgs = ob.messages("alerts")
        st.store([Received(m.topic, m.encode(), m) for m in msgs])
        ob.ack(m.seq for m in msgs)

    ob = Outbox(path, agent="a1", site="s1", reannounce_seconds=300)
    ob.enqueue([raise_("g1", "gate", t0), raise_("y1", "yard", t0)])
    deliver(ob)
    ob.close()
    assert len(st.alerts(open_only=True)) == 2

    ob = Outbox(path, agent="a1", site="s1", reannounce_seconds=60)
    # The gate's condition still holds: the new run raises it under a new id at a new time.
    ob.enqueue([raise_("g2", "gate", t0 + 600)], now=datetime.fromtimestamp(t0 + 600, timezone.utc))
    (again,) = ob.messages("alerts")
    assert (again.payload.alert_id, again.payload.started_at) == ("g1", T0)
    deliver(ob)
    # The yard's is not re-raised: after the re-announce time it is cleared.
    ob.settle(now=t0 + 600 + 61)
    (cleared,) = ob.messages("alerts")
    assert (cleared.payload.alert_id, cleared.payload.state) == ("y1", "cleared")
    deliver(ob)
    # The new run's clear of its gate alert clears the original object.
    ob.enqueue([("alerts", "cam", AlertPayload(
        alert_id="g2", type="intrusion", state="cleared", severity="critical",
        started_at=datetime.fromtimestamp(t0 + 600, timezone.utc),
        ended_at=datetime.fromtimestamp(t0 + 700, timezone.utc), rule="gate"))])  # fmt: skip
    (gate_clear,) = ob.messages("alerts")
    assert gate_clear.payload.alert_id == "g1"
    deliver(ob)
    ob.close()
    states = {a["rule"]: (a["alert_id"], a["state"], a["cleared_by"]) for a in st.alerts()}
    assert states == {"gate": ("g1", "cleared", "agent"), "yard": ("y1", "cleared", "agent")}
    assert [e[0] for e in alert_events(st)] == ["raise", "raise", "clear", "clear"]
    # A third run has nothing left to re-announce.
    ob = Outbox(path, agent="a1", site="s1", reannounce_seconds=0)
    ob.settle(now=t0 + 9999)
    assert ob.messages("alerts") == []
    ob.close()


def test_alerts_cli_lists_acks_and_clears(tmp_path, storage_url):
    url = storage_url()
    st = Storage(url)
    st.store([alert(1, "x1"), alert(2, "c1", type="crowd", camera="c2")])
    st.execute("UPDATE cameras SET jurisdiction = 'polres-a' WHERE camera = 'cam'")
    ids = {a["alert_id"]: a["id"] for a in st.alerts()}
    st.close()
    config = str(write_central_config(tmp_path, 1883, url))
    listed = cli("pantau-central", "alerts", "-c", config, "--format", "json",
                 "--jurisdiction", "polres-a")  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    assert [a["alert_id"] for a in json.loads(listed.stdout)] == ["x1"]
    ack = cli("pantau-central", "alerts", "ack", str(ids["x1"]), "--by", "budi", "--note",
              "on my way", "-c", config)  # fmt: skip
    assert ack.returncode == 0, ack.stderr
    clear = cli("pantau-central", "alerts", "-c", config, "clear", str(ids["c1"]), "--by", "sari")
    assert clear.returncode == 0, clear.stderr
    rows = cli("pantau-central", "alerts", "-c", config, "--format", "csv", "--open")
    assert rows.returncode == 0, rows.stderr
    header, *lines = rows.stdout.strip().splitlines()
    assert "acknowledged_by" in header and len(lines) == 1 and "budi" in lines[0]
    table = cli("pantau-central", "alerts", "-c", config)
    assert table.returncode == 0 and "operator: sari" in table.stdout
    missing = cli("pantau-central", "alerts", "ack", "999", "--by", "budi", "-c", config)
    assert missing.returncode != 0 and "no alert with id 999" in missing.stderr


def test_central_run_matches_a_restarted_agent_and_clears_when_silent(tmp_path, broker):
    """Through Mosquitto into a running central: a second raise of an open condition updates
    it, and `run`'s periodic check clears it once the camera has been silent long enough."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from tests.conftest import spawn
    from tests.datapath.test_faults import stop

    url = f"sqlite:///{tmp_path}/central.db"
    fast = {"offline_clear_after": 3, "check_every": 0.5}
    config = write_central_config(tmp_path, broker.port, url, alerts=fast)
    central = spawn("pantau-central", "run", "-c", str(config))
    try:
        line = central.stderr.readline() if central.stderr else ""
        assert "subscribed to" in line, line
        time.sleep(0.3)
        pub = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        pub.connect("127.0.0.1", broker.port)
        pub.loop_start()
        for r in (alert(1, "x1"), alert(2, "x2", minute=2)):
            pub.publish(r.topic, r.payload, qos=1).wait_for_publish(5)
        pub.loop_stop()
        deadline = time.monotonic() + 20
        seen: list[tuple] = []
        while time.monotonic() < deadline:
            if Path(f"{tmp_path}/central.db").exists():
                st = Storage(url)
                seen = [(a["alert_id"], a["state"], a["cleared_by"]) for a in st.alerts()]
                actions = [e[0] for e in alert_events(st)]
                st.close()
                if seen and seen[0][1] == "cleared":
                    break
            time.sleep(0.3)
        assert seen == [("x1", "cleared", "central: offline")]
        assert actions == ["raise", "update", "clear"]
        assert central.poll() is None
    finally:
        stop(central)


def test_camera_offline_across_an_agent_restart_is_one_alert(tmp_path, new_storage):
    """The agent's own health rule and outbox: a camera offline when the agent stopped is
    offline again after the restart (the same alert goes on, re-raised under its old id) and
    its clear, once frames come back, clears the one object central has."""
    import numpy as np
    from pantau.agent.pipeline.camera import alert_payload
    from pantau.agent.rules.health import HealthMonitor

    st = new_storage()
    path = tmp_path / "outbox.db"
    t0 = time.time() - 3600

    def run(monitor: HealthMonitor, ob: Outbox, times: list[float], frame_at: float | None):
        for t in times:
            frame = None
            if frame_at is not None and t >= frame_at:
                frame = np.random.default_rng(int(t)).integers(0, 255, (120, 160, 3), np.uint8)
            events = monitor.update(t, frame)
            ob.enqueue([("alerts", "cam", alert_payload(e)) for e in events])
        msgs = ob.messages("alerts")
        st.store([Received(m.topic, m.encode(), m) for m in msgs])
        ob.ack(m.seq for m in msgs)
        return [(m.payload.alert_id, m.payload.state) for m in msgs]

    ob = Outbox(path, agent="a1", site="s1", reannounce_seconds=300)
    (first,) = run(HealthMonitor(), ob, [t0 + s for s in range(0, 15)], None)
    ob.close()
    ob = Outbox(path, agent="a1", site="s1", reannounce_seconds=300)
    monitor = HealthMonitor()
    again = run(monitor, ob, [t0 + 100 + s for s in range(12)], None)
    assert again == [(first[0], "raised")]  # the old alert, re-announced
    back = run(monitor, ob, [t0 + 112 + s for s in range(3)], frame_at=t0 + 112)
    assert back == [(first[0], "cleared")]
    ob.close()
    (a,) = st.alerts()
    assert (a["alert_id"], a["type"], a["state"], a["cleared_by"]) == (
        first[0], "camera_offline", "cleared", "agent")  # fmt: skip
    assert [e[0] for e in alert_events(st)] == ["raise", "clear"]


def test_an_outbox_without_reannounce_keeps_its_alerts_as_given(tmp_path):
    """A simulation (no reannounce_seconds) resumed on the same outbox sends what it generates."""
    path = tmp_path / "outbox.db"
    raised = AlertPayload(alert_id="s1", type="crowd", state="raised", started_at=T0, rule="p")
    for alert_id in ("s1", "s2"):
        ob = Outbox(path, agent="a1", site="s1")
        ob.enqueue([("alerts", "cam", raised.model_copy(update={"alert_id": alert_id}))])
        ob.settle(now=time.time() + 10**6)
        ob.close()
    ob = Outbox(path, agent="a1", site="s1")
    assert [m.payload.alert_id for m in ob.messages("alerts")] == ["s1", "s2"]
    ob.close()


def test_retention_drops_old_cleared_alerts_and_evidence_but_keeps_open_ones(new_storage):
    st = new_storage()
    st.store([alert(1, "old"), alert(2, "old", "cleared"), alert(3, "long-open", rule="fence")])
    old, still_open = sorted(st.alerts(), key=lambda a: a["rule"], reverse=True)
    assert (old["state"], still_open["state"]) == ("cleared", "open")
    jpeg = b"\xff\xd8" + bytes(100)
    frame = {"idx": 0, "taken_at": format_time(T0), "offset_seconds": 0.0, "width": 4,
             "height": 4, "sha256": "00", "jpeg": jpeg}  # fmt: skip
    audit = {"who": "budi", "why": "case 7", "outcome": "ok", "detail": ""}
    cam = CameraRef("s1", "a1", "cam")
    st.store_evidence(cam, "old", [frame], audit, now=T0.timestamp())
    st.store_evidence(cam, "long-open", [frame], audit, now=T0.timestamp() + 40 * 86400)

    # 31 days later the first frame is past evidence_days (30); nothing else is old enough.
    dropped = st.maintain(T0.timestamp() + 31 * 86400)
    assert (dropped["evidence"], dropped["alerts"], dropped["evidence_audit"]) == (1, 0, 0)
    assert [e["alert_id"] for e in st.evidence_for()] == ["long-open"]
    # 401 days after the clear: the cleared alert, its messages and links and the first audit go.
    dropped = st.maintain(T0.timestamp() + 401 * 86400)
    assert (dropped["alerts"], dropped["alert_links"], dropped["alert_messages"]) == (1, 1, 2)
    assert (dropped["evidence_audit"], dropped["evidence"]) == (1, 1)
    (kept,) = st.alerts()
    assert (kept["id"], kept["state"]) == (still_open["id"], "open")
    assert st.one("SELECT COUNT(*) FROM alerts") == 1
    assert [a["alert_id"] for a in st.evidence_audit()] == ["long-open"]
    # The open alert's later clear still joins its object (its link was kept).
    st.store([alert(4, "long-open", "cleared", rule="fence")])
    assert st.alert(still_open["id"])["state"] == "cleared"
