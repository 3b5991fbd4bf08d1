"""Evidence on request through a real Mosquitto: central asks (MQTT v5 Response Topic and
Correlation Data), the agent's responder answers from a store filled with real footage, central
keeps the JPEGs with an audit record; refusals (disabled, not found, expired, no answer) are
clear and audited too; the agent answers only its own request topic, and only to its own tree;
a live agent keeps evidence yet publishes none unasked."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pantau.agent.config.agent import AgentSettings, CameraConfig
from pantau.agent.evidence.recorder import EvidenceRecorder, EvidenceWriter
from pantau.agent.evidence.responder import EvidenceResponder
from pantau.agent.evidence.store import EvidenceStore
from pantau.agent.runtime import LiveAgent
from pantau.agent.vision.capture import Frame
from pantau.agent.wire.protocol import (
    AlertPayload,
    EvidenceReply,
    EvidenceRequest,
    decode_evidence,
    evidence_request_topic,
    evidence_response_topic,
    is_evidence_topic,
    utcnow,
)
from pantau.agent.wire.settings import BrokerSettings
from pantau.central.config import CentralSettings
from pantau.central.evidence import EvidenceUnavailable, request_evidence
from pantau.central.storage import Storage

from tests.conftest import cli
from tests.datapath.helpers import query
from tests.datapath.test_credentials import (  # noqa: F401 (fixtures)
    DYNSEC,
    broker_dir,
    client,
    dynsec,
    publish,
    subscribe,
)
from tests.datapath.test_faults import start_central, stop
from tests.pipeline.test_analyze_cli import _model_built
from tests.pipeline.test_evidence_store import Clock, campus_frame
from tests.pipeline.test_full_disk import _wait

ALERT = {"site": "s1", "agent": "a1", "camera": "cam", "alert_id": "e1"}


def settings_for(tmp: Path, port: int, **evidence) -> AgentSettings:
    return AgentSettings(
        id="a1", site="s1",
        broker={"port": port, "reconnect_min": 0.2, "reconnect_max": 1.0},
        buffer={"path": tmp / "outbox.db"},
        evidence={"path": tmp / "evidence", **evidence},
    )  # fmt: skip


def central_for(port: int, url: str = "sqlite:///unused.db") -> CentralSettings:
    return CentralSettings(broker={"port": port, "reconnect_min": 0.2}, storage=url)


def filled_store(tmp: Path, clock: Callable[[], float] | None = None) -> EvidenceStore:
    """A store holding alert e1 of camera cam: five frames of real footage around its raise."""
    store = EvidenceStore(tmp / "evidence", 10**8, 72 * 3600, clock=clock or time.time)
    writer = EvidenceWriter(store, settings_for(tmp, 1).evidence)
    recorder = EvidenceRecorder("cam", CameraConfig(), writer)
    now = time.time()
    for k in range(8):
        image, tracks = campus_frame(1 + 5 * k)
        raised = [AlertPayload(alert_id="e1", type="intrusion", state="raised",
                               started_at=utcnow())] if k == 3 else []  # fmt: skip
        recorder(Frame(image, now + k), tracks, raised)
    writer.close()
    assert recorder.failures == writer.failures == 0
    return store


@contextmanager
def responding(settings: AgentSettings, store: EvidenceStore | None) -> Iterator[EvidenceResponder]:
    responder = EvidenceResponder(settings, store)
    responder.start()
    try:
        assert responder.ready.wait(10), responder.conn.last_error
        yield responder
    finally:
        responder.stop()


class Watcher:
    """A client subscribed to everything: what crossed the broker."""

    def __init__(self, port: int) -> None:
        self.seen: list[tuple[str, bytes, Properties | None]] = []
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_message = lambda _c, _u, m: self.seen.append(
            (m.topic, bytes(m.payload), getattr(m, "properties", None))
        )
        self.client.connect("127.0.0.1", port)
        self.client.subscribe("#", qos=1)
        self.client.loop_start()
        time.sleep(0.3)

    def topics(self) -> list[str]:
        return [t for t, _, _ in self.seen]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def test_round_trip_keeps_jpegs_with_an_audit(
    tmp_path: Path, broker, new_storage: Callable[..., Storage]
) -> None:
    storage = new_storage()
    store = filled_store(tmp_path)
    with responding(settings_for(tmp_path, broker.port), store) as responder:
        rows = request_evidence(
            central_for(broker.port),
            storage,
            ALERT,
            "budi (polres)",
            "intrusion at the pit gate: send a unit?",
            timeout=10,
        )
        assert responder.answered == 1
    assert [r["idx"] for r in rows] == [0, 1, 2, 3, 4]
    assert [r["offset_seconds"] for r in rows] == [-2.0, -1.0, 0.0, 1.0, 2.0]
    kept = store.lookup("e1").frames
    for row, frame in zip(rows, kept, strict=True):
        jpeg = storage.evidence_jpeg(row["id"])
        assert jpeg == frame.jpeg and row["size"] == len(jpeg) and row["sha256"] == frame.sha256
        picture = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert picture.shape[1::-1] == (row["width"], row["height"]) == (640, 480)
        assert (row["site"], row["agent"], row["camera"], row["alert_id"]) == (
            "s1",
            "a1",
            "cam",
            "e1",
        )
    assert storage.evidence_for("s1", "a1", "e1") == rows
    audit = storage.evidence_audit()
    assert len(audit) == 1
    assert audit[0]["who"] == "budi (polres)" and audit[0]["why"].startswith("intrusion")
    assert (audit[0]["outcome"], audit[0]["frames"], audit[0]["camera"]) == ("stored", 5, "cam")

    # Asked again: central has them, the agent is not asked (it is gone); audited too.
    again = request_evidence(central_for(broker.port), storage, ALERT, "sari", "review", timeout=2)
    assert again == rows
    assert [a["outcome"] for a in storage.evidence_audit()] == ["kept", "stored"]
    with pytest.raises(ValueError, match="why"):
        request_evidence(central_for(broker.port), storage, ALERT, "sari", " ", timeout=2)
    store.close()


def test_disabled_evidence_answers_disabled_and_nothing_is_kept(tmp_path: Path, broker) -> None:
    storage = Storage(f"sqlite:///{tmp_path}/central.db")
    settings = settings_for(tmp_path, broker.port, enabled=False)
    refused = pytest.raises(EvidenceUnavailable, match="disabled")
    with responding(settings, None), refused as caught:
        request_evidence(central_for(broker.port), storage, ALERT, "budi", "check", timeout=10)
    assert caught.value.outcome == "disabled"
    assert storage.evidence_for() == []
    [audit] = storage.evidence_audit()
    assert (audit["outcome"], audit["frames"], audit["who"]) == ("disabled", 0, "budi")


def test_unknown_alert_wrong_camera_expired_and_silence_are_clear(tmp_path: Path, broker) -> None:
    storage = Storage(f"sqlite:///{tmp_path}/central.db")
    clock = Clock(time.time())
    store = filled_store(tmp_path, clock)
    central = central_for(broker.port)
    with responding(settings_for(tmp_path, broker.port), store):
        for alert, outcome, words in (
            ({**ALERT, "alert_id": "nope"}, "not_found", "no evidence of alert nope"),
            # The alert exists, but not on the camera the operator may see.
            ({**ALERT, "camera": "other"}, "not_found", "of camera other"),
        ):
            with pytest.raises(EvidenceUnavailable, match=words) as caught:
                request_evidence(central, storage, alert, "budi", "check", timeout=10)
            assert caught.value.outcome == outcome
        clock.t += 73 * 3600  # past the 72 h retention
        with pytest.raises(EvidenceUnavailable, match="retention") as caught:
            request_evidence(central, storage, ALERT, "budi", "check", timeout=10)
        assert caught.value.outcome == "expired"
    # Nobody answers for an agent that is not there: a timeout, after the wait and no longer.
    started = time.monotonic()
    with pytest.raises(EvidenceUnavailable, match="did not answer within 1 s") as caught:
        request_evidence(central, storage, {**ALERT, "agent": "a2"}, "budi", "check", timeout=1)
    assert caught.value.outcome == "timeout" and time.monotonic() - started < 5
    assert [a["outcome"] for a in storage.evidence_audit()] == [
        "timeout",
        "expired",
        "not_found",
        "not_found",
    ]
    assert storage.evidence_for() == []
    store.close()


def _ask(client: mqtt.Client, topic: str, body: bytes, reply_to: str) -> None:
    props = Properties(PacketTypes.PUBLISH)
    props.ResponseTopic = reply_to
    props.CorrelationData = b"probe"
    client.publish(topic, body, qos=1, properties=props).wait_for_publish(5)


def test_the_agent_answers_only_its_own_topic_and_only_into_its_own_tree(
    tmp_path: Path, broker
) -> None:
    store = filled_store(tmp_path)
    watcher = Watcher(broker.port)
    own = evidence_request_topic("s1", "a1")
    mine = evidence_response_topic("s1", "a1", "probe")

    def request(site: str, agent: str) -> bytes:
        return EvidenceRequest(site=site, agent=agent, camera="cam", alert_id="e1",
                               created_at=utcnow()).encode()  # fmt: skip

    try:
        with responding(settings_for(tmp_path, broker.port), store) as responder:
            # Another agent's topic (asking for our alert id): not ours, never answered.
            _ask(
                watcher.client,
                evidence_request_topic("s1", "a2"),
                request("s1", "a2"),
                evidence_response_topic("s1", "a2", "probe"),
            )
            # Our topic, but answers aimed outside our tree: ignored, not sent there.
            _ask(watcher.client, own, request("s1", "a1"), "pantau/v1/s1/a2/evidence/response/x")
            _ask(watcher.client, own, request("s1", "a1"), "elsewhere/loot")
            time.sleep(2)
            assert responder.answered == 0 and responder.ignored == 2
            assert all("response" not in t for t in watcher.topics()), watcher.topics()
            # Our topic, a body naming another agent: refused, and said so.
            _ask(watcher.client, own, request("s1", "a2"), mine)
            # Our topic, a proper request: answered, one message per frame, in order.
            _ask(watcher.client, own, request("s1", "a1"), mine)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and watcher.topics().count(mine) < 6:
                time.sleep(0.1)
        replies = [(decode_evidence(EvidenceReply, t, body), props)
                   for t, body, props in watcher.seen if t == mine]  # fmt: skip
        assert [r.status for r, _ in replies] == ["bad_request"] + ["ok"] * 5
        assert "request for s1/a2 on s1/a1's topic" in replies[0][0].detail
        assert [r.part for r, _ in replies[1:]] == [0, 1, 2, 3, 4]
        assert all(p.CorrelationData == b"probe" for _, p in replies)
        evidence = [t for t in watcher.topics() if is_evidence_topic(t)]
        assert set(evidence) == {own, mine, evidence_request_topic("s1", "a2")}
    finally:
        watcher.close()
        store.close()


def test_cli_requests_lists_audits_and_saves(tmp_path: Path, broker) -> None:
    store = filled_store(tmp_path)
    config = tmp_path / "central.yaml"
    config.write_text(
        json.dumps({"broker": {"port": broker.port}, "storage": f"sqlite:///{tmp_path}/central.db"})
    )
    base = ("--config", str(config))
    with responding(settings_for(tmp_path, broker.port), store):
        # The camera is not stored with an alert here: asked for, it must be named.
        r = cli(
            "pantau-central",
            "evidence",
            "request",
            "--site",
            "s1",
            "--agent",
            "a1",
            "--alert",
            "e1",
            "--by",
            "budi",
            "--why",
            "check",
            *base,
        )
        assert r.returncode == 2 and "--camera" in r.stderr
        r = cli(
            "pantau-central",
            "evidence",
            "request",
            "--site",
            "s1",
            "--agent",
            "a1",
            "--alert",
            "e1",
            "--camera",
            "cam",
            "--by",
            "budi",
            "--why",
            "check",
            "--format",
            "json",
            *base,
        )
        assert r.returncode == 0, r.stderr
        assert [f["idx"] for f in json.loads(r.stdout)] == [0, 1, 2, 3, 4]
        r = cli(
            "pantau-central",
            "evidence",
            "request",
            "--site",
            "s1",
            "--agent",
            "a1",
            "--alert",
            "zzz",
            "--camera",
            "cam",
            "--by",
            "budi",
            "--why",
            "check",
            *base,
        )
        assert r.returncode == 1 and "not_found" in r.stderr
    r = cli("pantau-central", "evidence", "list", "--alert", "e1", "--format", "json", *base)
    frames = json.loads(r.stdout)
    assert len(frames) == 5
    r = cli("pantau-central", "evidence", "audit", "--format", "csv", *base)
    assert r.returncode == 0 and r.stdout.count("\n") == 3  # header and two requests
    assert "not_found" in r.stdout and "stored" in r.stdout
    out = tmp_path / "frame.jpg"
    r = cli("pantau-central", "evidence", "save", str(frames[2]["id"]), "-o", str(out), *base)
    assert r.returncode == 0 and out.read_bytes() == store.lookup("e1").frames[2].jpeg
    store.close()


@pytest.mark.skipif(not _model_built(), reason="nanodet-m is not built")
def test_a_live_agent_keeps_evidence_and_publishes_none_unasked(
    tmp_path: Path, shared_data: Path, broker
) -> None:
    """TUD-Campus through the real detector with an always-restricted zone: intrusions are
    raised and sent, their frames kept at the edge, and not one evidence message crosses the
    broker until central asks; then the frames of the live alert come back."""
    video = shared_data / "videos" / "TUD-Campus.mp4"
    if not video.is_file():
        pytest.skip(f"{video} is missing")
    settings = settings_for(tmp_path, broker.port, interval_seconds=0.4)
    settings = settings.model_copy(update={"cameras": {"campus": CameraConfig(
        source=str(video), analysis_fps=5,
        zones={"left": {"polygon": [[0, 150], [320, 150], [320, 479], [0, 479]],
                        "classes": ["person"],
                        "restricted": {"schedule": "00:00-24:00", "hold_seconds": 0}}},
    )}})  # fmt: skip
    watcher = Watcher(broker.port)
    central = start_central(tmp_path, broker.port)  # ingest: sees evidence topics, stores none
    agent = LiveAgent(settings)
    try:
        agent.start()
        assert agent.responder is not None and agent.responder.ready.wait(10)
        agent.run_until(threading.Event(), duration=8)
        assert agent.evidence is not None
        alerts = agent.evidence.alerts()
        assert alerts, "no alert kept evidence"
        assert _wait(lambda: query(tmp_path, "SELECT COUNT(*) FROM alerts WHERE alert_id = ?",
                                   (alerts[0],))[0][0] > 0, timeout=15)  # fmt: skip
        assert any(t.endswith("/campus/alerts") for t in watcher.topics())
        assert not [t for t in watcher.topics() if is_evidence_topic(t)]
        assert not any(len(body) > 20_000 for _, body, _ in watcher.seen)  # no picture at all

        # The operator names the alert; its camera comes from the alert central stored.
        r = cli("pantau-central", "evidence", "request", "--site", "s1", "--agent", "a1",
                "--alert", alerts[0], "--by", "budi", "--why", "live check", "--format", "json",
                "-c", str(tmp_path / "central.yaml"))  # fmt: skip
        assert r.returncode == 0, r.stderr
        rows = json.loads(r.stdout)
        assert len(rows) >= 2 and 0.0 in [r["offset_seconds"] for r in rows]
        assert all(r["width"] == 640 and r["camera"] == "campus" for r in rows)
        assert [t for t in watcher.topics() if is_evidence_topic(t)]  # now, asked
        time.sleep(1)
        assert query(tmp_path, "SELECT COUNT(*) FROM dead_letters")[0][0] == 0
    finally:
        agent.stop()
        watcher.close()
        stop(central)


@pytest.mark.skipif(not DYNSEC.exists(), reason=f"{DYNSEC} missing")
def test_broker_rights_let_only_central_ask_and_only_the_agent_answer(
    dynsec,  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
) -> None:
    """With the users `pantau-central credentials` writes: the round trip works through them;
    another agent can neither ask a1, nor listen to a1's requests, nor read its answers."""
    broker, pw = dynsec
    a2 = client(broker.port, "s1/a2", pw["a2"])
    body = EvidenceRequest(site="s1", agent="a1", camera="cam", alert_id="e1",
                           created_at=utcnow()).encode()  # fmt: skip
    assert publish(a2, evidence_request_topic("s1", "a1"), body) == 135
    assert subscribe(a2, evidence_request_topic("s1", "a1"))[0] >= 128
    assert subscribe(a2, "pantau/v1/s1/a1/evidence/response/#")[0] >= 128
    a2.loop_stop()

    store = filled_store(tmp_path)
    agent = settings_for(tmp_path, broker.port).model_copy(update={"broker": BrokerSettings(
        port=broker.port, username="s1/a1", password=pw["a1"])})  # fmt: skip
    central = CentralSettings(
        broker={"port": broker.port, "username": "central", "password": pw["central"]},
        storage=f"sqlite:///{tmp_path}/central.db",
    )
    storage = Storage(central.storage)
    with responding(agent, store):
        rows = request_evidence(central, storage, ALERT, "budi", "check", timeout=10)
    assert len(rows) == 5 and storage.evidence_audit()[0]["outcome"] == "stored"
    store.close()
