"""The live stream through a real uvicorn on a free port: server-sent events of what central
stores from now on, only those in the token's scope, resumable with Last-Event-ID."""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from pantau.central.api.app import create_app

from tests.conftest import free_port, spawn, wait_port
from tests.datapath.api_world import World, bucket, build
from tests.datapath.conftest import write_central_config


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[World, str]]:
    world = build(f"sqlite:///{tmp_path}/central.db")
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(world.settings),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            timeout_graceful_shutdown=2,
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_port(port, up=True)
    yield world, f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)
    world.storage.close()


def events(response: httpx.Response, n: int) -> list[dict]:
    """The next `n` events of an SSE response, each as {id, event, data}."""
    found: list[dict] = []
    current: dict = {}
    for line in response.iter_lines():
        if line.startswith(("id: ", "event: ", "data: ")):
            key, value = line.split(": ", 1)
            current[key] = json.loads(value) if key == "data" else value
        elif line == "" and "data" in current:
            found.append(current)
            current = {}
            if len(found) == n:
                return found
    raise AssertionError(f"the stream ended after {len(found)} events")


def test_stream_delivers_in_scope_and_never_out_of_scope(served):
    world, base = served
    with httpx.Client(base_url=base, timeout=10) as client:
        with client.stream(
            "GET", "/api/v1/stream", params={"kinds": "counts"}, headers=world.auth("polres-a")
        ) as mine:
            assert mine.status_code == 200
            assert mine.headers["content-type"].startswith("text/event-stream")
            # Stored after the stream began: first one outside polres-a (cx is polres-b's),
            # then one inside. Were the first one sent, it would come first.
            world.storage.store([bucket("s2/b1/cx", 10, 10)])
            world.storage.store([bucket("s1/a1/cam", 11, 11)])
            (event,) = events(mine, 1)
            assert event["event"] == "counts"
            assert event["data"]["camera"] == "cam" and event["data"]["site"] == "s1"
            assert event["data"]["jurisdiction"] == "polres-a"
            assert event["data"]["body"]["lines"]["door"]["person"]["in"] == 2
            last = int(event["id"])
        # Resuming after an id replays what followed it, in scope; from 0, all in scope.
        with client.stream(
            "GET",
            "/api/v1/stream",
            params={"kinds": "counts"},
            headers={**world.auth("polres-b"), "Last-Event-ID": "0"},
        ) as theirs:
            replay = events(theirs, 6)
            cameras = [e["data"]["camera"] for e in replay]
            assert set(cameras) == {"cam2", "cx"} and cameras.count("cx") == 3
            assert [int(e["id"]) for e in replay] == sorted(int(e["id"]) for e in replay)
            assert int(replay[-1]["id"]) < last  # cx's bucket 10 came before cam's 11
        # Alerts as they are acknowledged: polres-a hears of its camera's only.
        with client.stream("GET", "/api/v1/stream", headers=world.auth("polres-a")) as mine:
            by_camera = {a["camera"]: a["id"] for a in world.storage.alerts()}
            world.storage.ack_alert(by_camera["cx"], "admin", "not theirs")
            world.storage.ack_alert(by_camera["cam"], "admin", "theirs")
            (event,) = events(mine, 1)
            assert event["event"] == "alerts" and event["data"]["action"] == "ack"
            assert event["data"]["body"]["id"] == by_camera["cam"]
            assert event["data"]["body"]["ack_note"] == "theirs"
        res = client.get(
            "/api/v1/stream", params={"kinds": "nothing"}, headers=world.auth("polres-a")
        )
        assert res.status_code == 422


def test_serve_command_answers_and_stops(tmp_path):
    """`pantau-central serve` over a central.yaml: OpenAPI and a scoped answer, then a clean
    stop on SIGTERM."""
    world = build(f"sqlite:///{tmp_path}/central.db")
    world.storage.close()
    config = write_central_config(tmp_path, 1883, world.settings.storage)
    port = free_port()
    proc = spawn("pantau-central", "serve", "-c", str(config), "--port", str(port))
    try:
        wait_port(port, up=True, timeout=30)
        base = f"http://127.0.0.1:{port}/api/v1"
        assert httpx.get(f"{base}/openapi.json").json()["info"]["title"]
        res = httpx.get(f"{base}/cameras", headers=world.auth("site-s2"))
        assert res.status_code == 200 and [c["camera"] for c in res.json()["items"]] == ["cx"]
        assert httpx.get(f"{base}/cameras").status_code == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal (the exit status says so).
        assert proc.wait(20) in (0, -signal.SIGTERM)
    assert "Finished server process" in proc.stderr.read()
