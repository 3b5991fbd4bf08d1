"""Garbage on the wire and bad configs: central dead-letters with a reason and keeps running;
the CLIs say what is wrong and where, with exit code 2 and no traceback."""

from __future__ import annotations

import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from pantau.agent.wire.protocol import AlertMessage, AlertPayload, utcnow

from tests.conftest import cli
from tests.datapath.helpers import agent_config, central_config, query
from tests.datapath.test_faults import start_central, stop

GOOD = AlertMessage(
    msg_id="good-1",
    seq=0,
    agent="a1",
    site="s1",
    camera="cam",
    created_at=utcnow(),
    payload=AlertPayload(alert_id="x", type="intrusion", state="raised", started_at=utcnow()),
)

# (A payload over 256 KiB never reaches central: the broker drops it, see test_hostile.py.)
BAD = [
    ("pantau/v1/s1/a1/cam/counts", b"not json at all", "not JSON"),
    ("pantau/v1/s1/a1/cam/counts", b"[]", "not a JSON object"),
    ("pantau/v1/s1/a1/cam/counts", b'{"v": 9}', "unknown protocol version"),
    ("pantau/v1/s1/a1/cam/counts", b'{"v": 1, "kind": "counts", "seq": -1}', "schema"),
    (
        "pantau/v1/s1/a1/cam/alerts",
        GOOD.model_copy(update={"camera": "other"}).encode(),
        "topic/body mismatch",
    ),
    ("pantau/v1/s1/a1/cam/video", b"{}", "is not pantau/v1"),
    ("pantau/v1/s1/a1/cam/alerts", b"\xff\xfe\x00garbage", "not JSON"),
]


def test_garbage_is_dead_lettered_and_central_survives(tmp_path, broker):
    central = start_central(tmp_path, broker.port)
    try:
        pub = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        pub.connect("127.0.0.1", broker.port)
        pub.loop_start()
        for topic, payload, _ in BAD:
            pub.publish(topic, payload, qos=1).wait_for_publish(5)
        pub.publish(GOOD.topic, GOOD.encode(), qos=1).wait_for_publish(5)
        pub.publish(GOOD.topic, GOOD.encode(), qos=1).wait_for_publish(5)  # a duplicate
        pub.loop_stop()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if (tmp_path / "central.db").exists() and query(
                tmp_path, "SELECT COUNT(*) FROM alerts"
            )[0][0]:
                break
            time.sleep(0.2)
        assert central.poll() is None, "central must keep running"
        dead = query(tmp_path, "SELECT topic, reason, size FROM dead_letters ORDER BY id")
        assert len(dead) == len(BAD)
        for (topic, reason, size), (want_topic, payload, why) in zip(dead, BAD, strict=True):
            assert topic == want_topic and why in reason and size == len(payload)
        assert query(tmp_path, "SELECT alert_id FROM alerts") == [("x",)]
        assert query(tmp_path, "SELECT COUNT(*) FROM messages")[0][0] == 1
        shown = cli("pantau-central", "dead-letters", "-c", str(central_config(tmp_path, 1)))
        assert shown.returncode == 0 and "topic/body mismatch" in shown.stdout
    finally:
        stop(central)


def test_bad_config_lists_every_problem(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "id: 'bad/id'\nsite: s1\nbucket_seconds: 7\nbroker: {port: 70000, hots: x}\n"
        "buffer: {max_mb: -1}\n"
    )
    res = cli("pantau-agent", "config", "-c", str(bad))
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    for line in (
        "id: 'bad/id' ->",
        "bucket_seconds: 7 -> must divide 3600",
        "broker.port: 70000 ->",
        "broker.hots: 'x' -> Extra inputs are not permitted",
        "buffer.max_mb: -1 ->",
    ):
        assert line in res.stderr, res.stderr


def test_env_overrides_file(tmp_path):
    config = agent_config(tmp_path, 1883)
    res = cli(
        "pantau-agent",
        "config",
        "-c",
        str(config),
        env={"PANTAU_BROKER__PORT": "1999", "PATH": "/usr/bin:/bin"},
    )
    assert res.returncode == 0, res.stderr
    assert '"port": 1999' in res.stdout


def test_missing_or_broken_files_are_clear(tmp_path):
    res = cli("pantau-agent", "config", "-c", str(tmp_path / "nope.yaml"))
    assert res.returncode == 2 and "cannot read" in res.stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text("id: [unclosed\n")
    res = cli("pantau-central", "status", "-c", str(broken))
    assert res.returncode == 2 and "not valid YAML" in res.stderr and "line" in res.stderr
    res = cli("pantau-central", "status", "-c", str(central_config(tmp_path, 1)))
    assert res.returncode == 2 and "no database" in res.stderr
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("site: Balikpapan-Selatan\nid: kamera-\u00e9\n".encode("latin-1"))
    for command in (("pantau-agent", "config"), ("pantau-central", "status")):
        res = cli(*command, "-c", str(latin1))
        assert res.returncode == 2 and "Traceback" not in res.stderr
        assert "latin1.yaml: byte 36 -> not UTF-8" in res.stderr, res.stderr
    res = cli("pantau-agent", "simulate", "--cameras", "0")
    assert res.returncode == 2 and "Traceback" not in res.stderr


def test_packaged_example_configs_validate():
    from pathlib import Path

    from pantau.agent.config.agent import AgentSettings
    from pantau.agent.wire.settings import load_settings
    from pantau.central.config import CentralSettings

    root = Path(__file__).parents[2] / "packaging"
    agent = load_settings(AgentSettings, root / "agent.example.yaml")
    assert agent.broker.port == 8883 and agent.buffer.max_mb == 256
    assert set(agent.cameras) == {"plaza", "overpass"}
    assert agent.cameras["overpass"].tracker.new_score == 0.3
    assert agent.detector.provider == "cpu" and agent.detector.confidence == 0.1
    assert agent.cameras["plaza"].zones["road"].restricted.schedule == "18:00-06:00"
    central = load_settings(CentralSettings, root / "central.example.yaml")
    assert central.group == "central"


def test_config_hides_every_credential(tmp_path):
    config = tmp_path / "cams.yaml"
    config.write_text(
        "broker: {password: brokersecret}\n"
        "cameras:\n"
        "  gate: {source: 'rtsp://admin:Hunter2@10.1.2.3:554/stream1'}\n"
        "  mjpg: {source: 'http://10.1.2.4/video.cgi?user=admin&pwd=Hunter3&res=hd'}\n"
    )
    res = cli("pantau-agent", "config", "-c", str(config))
    assert res.returncode == 0, res.stderr
    for secret in ("brokersecret", "Hunter2", "Hunter3"):
        assert secret not in res.stdout
    assert "rtsp://admin:***@10.1.2.3:554/stream1" in res.stdout
    assert "pwd=***&res=hd" in res.stdout
