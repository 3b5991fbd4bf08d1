"""The camera registry: entries in the agent's camera config, carried by its status message
(protocol v1 stays readable both ways), stored by central with central.yaml's overrides winning
field by field, shown by `pantau-central cameras`, and behind the events' jurisdiction."""

from __future__ import annotations

import csv
import io
import json
import time
from datetime import timedelta

import pytest
from pantau.agent.config.agent import CameraConfig
from pantau.agent.wire.protocol import StatusMessage, StatusPayload, decode
from pantau.central.config import CentralSettings
from pantau.central.scope import Scope
from pantau.central.storage import Received, Storage
from pydantic import ValidationError

from tests.conftest import cli
from tests.datapath.conftest import write_central_config
from tests.datapath.test_storage import T0, counts

ENTRY = {
    "location": {"lat": -1.2379, "lon": 116.8529},
    "address": "Jl. Jend. Sudirman, Balikpapan",
    "description": "Gerbang utama",
    "jurisdiction": "polres-balikpapan",
    "tags": ["gate", "24h"],
}


def status(cameras: dict, minutes: int = 0, msg_id: str = "st1", state: str = "online"):
    msg = StatusMessage(
        msg_id=msg_id,
        seq=1,
        agent="a1",
        site="s1",
        created_at=T0 + timedelta(minutes=minutes),
        payload=StatusPayload(state=state, cameras=cameras),
    )
    return Received(msg.topic, msg.encode(), msg)


def test_camera_config_validates_registry_fields():
    cam = CameraConfig(source="rtsp://x", **ENTRY)
    assert cam.registry().model_dump(mode="json") == ENTRY
    for bad, where in (
        ({"location": {"lat": 91, "lon": 0}}, "lat"),
        ({"location": {"lat": 0, "lon": -181}}, "lon"),
        ({"jurisdiction": "polres balikpapan"}, "jurisdiction"),
        ({"tags": [" gate"]}, "tags"),
        ({"address": "x" * 501}, "address"),
    ):
        with pytest.raises(ValidationError, match=where):
            CameraConfig(source="rtsp://x", **bad)
    # Every registry field says what it is (config docs are generated from descriptions).
    for name in ENTRY:
        assert CameraConfig.model_fields[name].description


def test_status_without_registry_is_protocol_v1_both_ways():
    # A status from an agent before the registry decodes, with nothing said of its cameras.
    old = (
        b'{"v":1,"msg_id":"x","seq":3,"agent":"a1","site":"s1","created_at":'
        b'"2026-01-01T00:00:00Z","kind":"status","camera":null,"payload":{"state":"online",'
        b'"software":"pantau-agent/0.1"}}'
    )
    msg = decode("pantau/v1/s1/a1/status", old)
    assert isinstance(msg, StatusMessage) and msg.payload.cameras == {}
    # A status with no registry leaves the field out: a central before the registry (which
    # refuses unknown fields) still reads it.
    assert b"cameras" not in status({}).payload
    with_entry = status({"cam": ENTRY})
    assert json.loads(with_entry.payload)["payload"]["cameras"]["cam"]["tags"] == ["gate", "24h"]
    with pytest.raises(ValidationError, match="camera"):
        StatusPayload(state="online", cameras={"a/b": {}})


def test_status_fills_the_registry_and_central_yaml_wins_per_field(new_storage):
    override = {"s1/a1/cam": {"jurisdiction": "polres-kota", "tags": ["override"]}}
    st = new_storage(CentralSettings(cameras=override))
    st.store([status({"cam": ENTRY, "cam2": {"address": "Pelabuhan"}})])
    cams = {c["camera"]: c for c in st.cameras()}
    assert cams["cam"]["jurisdiction"] == "polres-kota"  # central wins
    assert cams["cam"]["tags"] == ["override"]
    assert cams["cam"]["address"] == ENTRY["address"]  # the agent's where central is silent
    assert cams["cam"]["location"] == ENTRY["location"]
    assert cams["cam2"]["address"] == "Pelabuhan" and cams["cam2"]["jurisdiction"] is None
    # Events carry the registry's (overridden) jurisdiction.
    st.store([counts(0, 0)])
    assert st.events_after(0, kinds=["counts"])[0].jurisdiction == "polres-kota"
    assert st.jurisdiction("s1", "a1", "cam") == "polres-kota"
    # Scoped listing.
    assert [c["camera"] for c in st.cameras(Scope.of(jurisdictions=["polres-kota"]))] == ["cam"]
    assert st.cameras(Scope.of(sites=["s2"])) == []


def test_older_status_and_status_without_registry_change_nothing(new_storage):
    st = new_storage()
    st.store([status({"cam": ENTRY}, minutes=10)])
    st.store([status({"cam": {"address": "stale"}}, minutes=0, msg_id="old")])  # retained, older
    st.store([status({}, minutes=20, msg_id="will", state="offline")])  # the last will
    (cam,) = st.cameras()
    assert cam["address"] == ENTRY["address"] and cam["jurisdiction"] == ENTRY["jurisdiction"]
    # A newer status that drops a field clears it.
    st.store([status({"cam": {"address": "baru"}}, minutes=30, msg_id="new")])
    (cam,) = st.cameras()
    assert (cam["address"], cam["jurisdiction"], cam["tags"]) == ("baru", None, [])


def test_overrides_apply_at_open_and_leave_when_removed(storage_url):
    url = storage_url()
    st = Storage(url)
    st.store([status({"cam": ENTRY})])
    st.close()
    # Added in central.yaml: applied when central opens the database, also for a camera that
    # was never seen (it is listed, without a last seen).
    settings = CentralSettings(
        storage=url,
        cameras={
            "s1/a1/cam": {"jurisdiction": "polda-kaltim"},
            "s1/a9/new": {"description": "belum terpasang"},
        },
    )
    st = Storage(url, settings)
    cams = {c["camera"]: c for c in st.cameras()}
    assert cams["cam"]["jurisdiction"] == "polda-kaltim"
    assert cams["new"]["description"] == "belum terpasang" and cams["new"]["last_seen"] is None
    st.close()
    # Removed again: the agent's own entry is back.
    st = Storage(url, CentralSettings(storage=url))
    cams = {c["camera"]: c for c in st.cameras()}
    assert cams["cam"]["jurisdiction"] == ENTRY["jurisdiction"]
    assert cams["new"]["description"] is None
    st.close()


def test_cameras_cli_lists_by_jurisdiction_with_health(tmp_path, storage_url):
    url = storage_url()
    st = Storage(url)
    st.store([status({"cam": ENTRY, "cam2": {"jurisdiction": "polres-lain"}}), counts(0, 0)])
    st.close()
    config = write_central_config(tmp_path, 1883, url)
    res = cli(
        "pantau-central",
        "cameras",
        "-c",
        str(config),
        "--format",
        "json",
        "--jurisdiction",
        "polres-balikpapan",
    )
    assert res.returncode == 0, res.stderr
    (row,) = json.loads(res.stdout)
    assert row["camera"] == "cam" and row["location"] == ENTRY["location"]
    assert row["last_seen"] is not None and "health" in row
    res = cli("pantau-central", "cameras", "-c", str(config), "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    assert [r["camera"] for r in rows] == ["cam", "cam2"]
    assert rows[0]["location"] == "-1.237900,116.852900" and rows[0]["tags"] == "gate,24h"
    res = cli("pantau-central", "cameras", "-c", str(config), "--site", "nowhere")
    assert res.returncode == 0 and "(no cameras)" in res.stdout


def test_agent_status_carries_the_registry_to_central(tmp_path, broker):
    """An agent's camera config reaches central's registry through its retained status over a
    real Mosquitto, central.yaml still winning where it says something."""
    from pantau.agent.config.agent import AgentSettings
    from pantau.agent.delivery.outbox import Outbox
    from pantau.agent.delivery.publisher import Publisher
    from pantau.central.ingest import Ingest

    agent = AgentSettings(
        id="a1",
        site="s1",
        broker={"port": broker.port},
        buffer={"path": tmp_path / "ob.db"},
        cameras={"cam": {"source": "rtsp://x", **ENTRY}, "cam2": {"source": "rtsp://y"}},
    )
    url = f"sqlite:///{tmp_path}/central.db"
    central = CentralSettings(
        storage=url,
        broker={"port": broker.port},
        cameras={"s1/a1/cam2": {"jurisdiction": "polres-kota"}},
    )
    ingest = Ingest(central)
    ingest.start()
    outbox = Outbox(agent.buffer.path, agent="a1", site="s1")
    publisher = Publisher(agent, outbox, cameras=2)
    publisher.start()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            st = Storage(url, central)
            cams = {c["camera"]: c for c in st.cameras()}
            st.close()
            if cams.get("cam", {}).get("address"):
                break
            time.sleep(0.2)
    finally:
        publisher.stop()
        ingest.stop()
        outbox.close()
    assert cams["cam"]["jurisdiction"] == "polres-balikpapan"
    assert cams["cam"]["location"] == ENTRY["location"] and cams["cam"]["tags"] == ENTRY["tags"]
    assert cams["cam2"]["jurisdiction"] == "polres-kota" and cams["cam2"]["address"] is None
