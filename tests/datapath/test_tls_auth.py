"""TLS and password auth against a real Mosquitto with certificates made by openssl; a wrong
password is reported clearly and loses nothing. Also the reconnect backoff's shape."""

from __future__ import annotations

import random
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from pantau.agent.wire.backoff import Backoff

from tests.conftest import cli, free_port, spawn, wait_port
from tests.datapath.helpers import query, summary_of, wait_buckets


def make_certs(d: Path) -> None:
    def ssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    ssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=pantau-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    )
    ssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    )
    (d / "san.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    ssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.cnf",
        "-out",
        "server.crt",
    )


@pytest.fixture
def tls_dir() -> Iterator[Path]:
    # Mosquitto reads certificates and the password file after dropping from root to its own
    # user, so they must sit where that user can reach them (pytest's tmp folders are 0700).
    d = Path(tempfile.mkdtemp(prefix="pantau-tls-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def tls_broker(tls_dir):
    if not shutil.which("openssl") or not shutil.which("mosquitto_passwd"):
        pytest.skip("openssl or mosquitto_passwd missing")
    tmp_path = tls_dir
    make_certs(tmp_path)
    passwd = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwd), "edge", "s3cret"], check=True)
    subprocess.run(["mosquitto_passwd", "-b", str(passwd), "central", "c3ntral"], check=True)
    for f in tmp_path.iterdir():
        f.chmod(0o644)
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {passwd}\n"
        f"cafile {tmp_path}/ca.crt\ncertfile {tmp_path}/server.crt\n"
        f"keyfile {tmp_path}/server.key\nmax_queued_messages 0\nmax_inflight_messages 0\n"
    )
    proc = subprocess.Popen(["/usr/sbin/mosquitto", "-c", str(conf)], stderr=subprocess.DEVNULL)
    wait_port(port, up=True)
    yield port
    proc.terminate()
    proc.wait(10)


def broker_section(tmp_path: Path, port: int, user: str, password: str) -> dict:
    return {
        "host": "localhost",
        "port": port,
        "username": user,
        "password": password,
        "tls": {"ca": str(tmp_path / "ca.crt")},
        "reconnect_min": 0.2,
        "reconnect_max": 1.0,
    }


def test_tls_with_password_end_to_end_and_bad_password(tmp_path, tls_dir, tls_broker):
    central_cfg = tmp_path / "central.yaml"
    central_cfg.write_text(
        yaml.safe_dump(
            {
                "broker": broker_section(tls_dir, tls_broker, "central", "c3ntral"),
                "storage": f"sqlite:///{tmp_path}/central.db",
            }
        )
    )
    central = spawn("pantau-central", "run", "-c", str(central_cfg))
    time.sleep(1.5)
    try:
        agent_cfg = tmp_path / "agent.yaml"
        agent = {
            "id": "a1",
            "site": "s1",
            "broker": broker_section(tls_dir, tls_broker, "edge", "wrong"),
            "buffer": {"path": str(tmp_path / "outbox.db")},
        }
        agent_cfg.write_text(yaml.safe_dump(agent))
        args = ["simulate", "-c", str(agent_cfg), "--cameras", "2", "--hours", "1"]
        res = cli("pantau-agent", *args, "--drain-timeout", "3")
        assert res.returncode == 1
        assert "refused the connection" in res.stderr and "still in the outbox" in res.stderr
        pending = summary_of(res.stdout)["pending"]
        assert (
            pending
            == summary_of(res.stdout)["buckets"] + summary_of(res.stdout)["messages"]["alerts"]
        )

        agent["broker"]["password"] = "s3cret"
        agent_cfg.write_text(yaml.safe_dump(agent))
        res = cli("pantau-agent", *args)
        assert res.returncode == 0, res.stderr
        summary = summary_of(res.stdout)
        assert wait_buckets(tmp_path, summary["buckets"]) == 120
        assert query(tmp_path, "SELECT COUNT(*) FROM dead_letters")[0][0] == 0
    finally:
        central.terminate()
        central.wait(10)


def test_backoff_doubles_with_jitter_and_caps():
    delays = Backoff(0.5, 8.0, jitter=True, rng=random.Random(1))
    got = [next(delays) for _ in range(8)]
    ceilings = [0.5, 1, 2, 4, 8, 8, 8, 8]
    assert all(c / 2 <= d <= c for d, c in zip(got, ceilings, strict=True))
    assert len(set(got)) == len(got), "jitter: no two delays alike"


def test_the_wrong_transport_is_named(tmp_path, tls_dir, tls_broker, broker):
    """Plain MQTT to a TLS port, and TLS to a plain port, each say what is likely wrong."""
    cases = [
        ({"port": tls_broker}, "may expect TLS"),
        ({"port": broker.port, "tls": {"ca": str(tls_dir / "ca.crt")}}, "may not speak TLS"),
    ]
    for section, hint in cases:
        config = tmp_path / "agent.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "id": "a1",
                    "site": "s1",
                    "broker": {
                        "host": "localhost",
                        "reconnect_min": 0.2,
                        "reconnect_max": 0.5,
                        **section,
                    },
                    "buffer": {"path": str(tmp_path / "outbox.db")},
                }
            )
        )
        res = cli(
            "pantau-agent",
            "simulate",
            "-c",
            str(config),
            "--cameras",
            "1",
            "--hours",
            "0.1",
            "--drain-timeout",
            "3",
        )
        assert res.returncode == 1 and hint in res.stderr, res.stderr
