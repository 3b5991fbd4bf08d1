"""Per-agent broker identities on a real Mosquitto: an agent cannot publish as another, cannot
join central's shared subscription, and central stores an agent's data through its own user.
Also why the plain ACL file is not used: with it an agent joins the share and messages vanish."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.conftest import MOSQUITTO, cli, free_port, spawn, wait_port
from tests.datapath.helpers import query, wait_buckets
from tests.datapath.test_faults import START, stop

DYNSEC = Path("/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so")
SHARE = "$share/central/pantau/v1/#"

pytestmark = pytest.mark.skipif(
    not DYNSEC.exists(), reason=f"{DYNSEC} missing (Debian's mosquitto package ships it)"
)


class SecureBroker:
    """A private Mosquitto that admits only the users of a file, by the plugin or ACL file."""

    def __init__(self, tmp: Path, auth: str) -> None:
        self.port = free_port()
        self.conf = tmp / "secure.conf"
        self.conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous false\n{auth}")
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_port(self.port, up=True)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def add(kind: str, name: str, file: Path) -> str:
    res = cli("pantau-central", "credentials", kind, name, "--file", str(file))
    assert res.returncode == 0, res.stderr
    password = res.stdout.strip()
    assert len(password) >= 24 and "\n" not in password  # printed once, alone
    return password


def client(port: int, user: str, password: str) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.username_pw_set(user, password)
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c


def subscribe(c: mqtt.Client, topic: str) -> list[int]:
    granted: list[int] = []

    def on_subscribe(client, userdata, mid, reason_codes, properties) -> None:
        granted.extend(rc.value for rc in reason_codes)

    c.on_subscribe = on_subscribe
    c.subscribe(topic, qos=1)
    deadline = time.monotonic() + 5
    while not granted and time.monotonic() < deadline:
        time.sleep(0.02)
    return granted


def publish(c: mqtt.Client, topic: str, payload: bytes) -> int:
    """QoS 1 publish; the PUBACK's reason code (below 128 accepted: 0, or 16 when nobody
    subscribes; 135 not authorised)."""
    reasons: list[int] = []
    c.on_publish = lambda client, userdata, mid, rc, props: reasons.append(rc.value)
    c.publish(topic, payload, qos=1, properties=Properties(PacketTypes.PUBLISH)).wait_for_publish(5)
    deadline = time.monotonic() + 5
    while not reasons and time.monotonic() < deadline:
        time.sleep(0.02)
    return reasons[0]


def collect(c: mqtt.Client) -> list[bytes]:
    got: list[bytes] = []
    c.on_message = lambda client, userdata, msg: got.append(msg.payload)
    return got


@pytest.fixture
def broker_dir() -> Iterator[Path]:
    """A folder the broker can read after it drops root for the `mosquitto` user (pytest's
    own temporary folders are private to root)."""
    path = Path(tempfile.mkdtemp(prefix="pantau-broker-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def dynsec(broker_dir):
    file = broker_dir / "dynsec.json"
    users = {
        "a1": add("add", "s1/a1", file),
        "a2": add("add", "s1/a2", file),
        "central": add("central", "central", file),
    }
    broker = SecureBroker(broker_dir, f"plugin {DYNSEC}\nplugin_opt_config_file {file}\n")
    yield broker, users
    broker.stop()


def test_an_agent_publishes_only_as_itself(dynsec):
    broker, pw = dynsec
    a1 = client(broker.port, "s1/a1", pw["a1"])
    assert publish(a1, "pantau/v1/s1/a1/cam/counts", b"mine") == 16  # accepted, unread
    assert publish(a1, "pantau/v1/s1/a2/cam/counts", b"forged") == 135
    assert publish(a1, "pantau/v1/s2/a1/cam/counts", b"forged site") == 135
    a1.loop_stop()


def test_only_central_joins_the_share_and_gets_everything(dynsec):
    broker, pw = dynsec
    central = client(broker.port, "central", pw["central"])
    received = collect(central)
    assert subscribe(central, SHARE) == [1]
    thief = client(broker.port, "s1/a2", pw["a2"])
    assert subscribe(thief, SHARE)[0] >= 128  # refused, so it never takes a share
    a1 = client(broker.port, "s1/a1", pw["a1"])
    for i in range(10):
        assert publish(a1, "pantau/v1/s1/a1/cam/counts", b"%d" % i) == 0
    deadline = time.monotonic() + 5
    while len(received) < 10 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sorted(received) == [b"%d" % i for i in range(10)]


def test_a_wrong_password_is_refused(dynsec):
    broker, _ = dynsec
    c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.username_pw_set("s1/a1", "wrong")
    codes: list[int] = []
    c.on_connect = lambda client, userdata, flags, rc, props: codes.append(rc.value)
    c.connect("127.0.0.1", broker.port)
    c.loop_start()
    deadline = time.monotonic() + 5
    while not codes and time.monotonic() < deadline:
        time.sleep(0.02)
    c.loop_stop()
    assert codes and codes[0] in (134, 135), codes  # bad user name or password; not authorised


def test_plain_acl_file_lets_an_agent_steal_centrals_share(broker_dir):
    """The reason for the plugin, measured: Mosquitto 2.0's ACL file grants any client the
    `$share/central/...` subscription, and the messages dealt to it are dropped unread."""
    passwd, acl = broker_dir / "passwd", broker_dir / "acl"
    for user, pw in (("central", "pc"), ("s1/a1", "pa")):
        create = [] if passwd.exists() else ["-c"]
        subprocess.run(["mosquitto_passwd", *create, "-b", str(passwd), user, pw], check=True)
    acl.write_text(
        "user s1/a1\ntopic write pantau/v1/s1/a1/#\n\n"
        "user central\ntopic read pantau/v1/#\ntopic read $share/central/pantau/v1/#\n"
    )
    passwd.chmod(0o644)
    acl.chmod(0o644)
    broker = SecureBroker(broker_dir, f"password_file {passwd}\nacl_file {acl}\n")
    try:
        central = client(broker.port, "central", "pc")
        received = collect(central)
        subscribe(central, SHARE)
        a1 = client(broker.port, "s1/a1", "pa")
        assert subscribe(a1, SHARE) == [1]  # granted: the weakness
        for i in range(10):
            publish(a1, "pantau/v1/s1/a1/cam/counts", b"%d" % i)
        time.sleep(1.0)
        assert len(received) < 10  # the agent's share vanished
    finally:
        broker.stop()


def test_central_and_agent_through_their_own_users(dynsec, tmp_path):
    broker, pw = dynsec
    db = tmp_path / "central.db"
    central_cfg = tmp_path / "central.yaml"
    central_cfg.write_text(
        yaml.safe_dump(
            {
                "broker": {"port": broker.port, "username": "central", "password": pw["central"]},
                "storage": f"sqlite:///{db}",
            }
        )
    )
    agent_cfg = tmp_path / "agent.yaml"
    agent_cfg.write_text(
        yaml.safe_dump(
            {
                "id": "a1",
                "site": "s1",
                "broker": {"port": broker.port, "username": "s1/a1", "password": pw["a1"]},
                "buffer": {"path": str(tmp_path / "outbox.db")},
            }
        )
    )
    central = spawn("pantau-central", "run", "-c", str(central_cfg))
    try:
        assert "subscribed to" in central.stderr.readline()
        time.sleep(0.3)
        res = cli(
            "pantau-agent",
            "simulate",
            "-c",
            str(agent_cfg),
            "--cameras",
            "2",
            "--hours",
            "0.5",
            "--start",
            START,
        )
        assert res.returncode == 0, res.stderr
        assert wait_buckets(tmp_path, 60) == 60
        assert query(tmp_path, "SELECT COUNT(*) FROM dead_letters")[0][0] == 0
    finally:
        stop(central)
