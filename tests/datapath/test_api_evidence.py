"""Evidence through the read API: only operators whose token covers the alert's camera see or
ask for frames; frames kept at central are served as JPEG to that scope only, and every request
is audited. The agent's side and the broker round trip are in test_evidence.py."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from pantau.central.api.app import create_app
from pantau.central.storage import CameraRef

from tests.datapath.api_world import World, build


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = build(f"sqlite:///{tmp_path}/central.db")
    # The broker named by the settings is not running: a request that must ask times out.
    w.settings.broker.port = 1
    yield w
    w.storage.close()


@pytest.fixture
def client(world: World) -> Iterator[TestClient]:
    with TestClient(create_app(world.settings)) as c:
        yield c


def keep_frame(world: World, alert: dict) -> bytes:
    ok, jpeg = cv2.imencode(".jpg", np.full((48, 64, 3), 90, np.uint8))
    assert ok
    data = jpeg.tobytes()
    frame = {"idx": 0, "taken_at": alert["raised_at"], "offset_seconds": 0.0, "width": 64,
             "height": 48, "sha256": hashlib.sha256(data).hexdigest(), "jpeg": data}  # fmt: skip
    world.storage.store_evidence(
        CameraRef(alert["site"], alert["agent"], alert["camera"]), alert["alert_id"], [frame],
        {"who": "test", "why": "fixture", "outcome": "ok", "detail": "1 of 1 frames"},
    )  # fmt: skip
    return data


def test_evidence_is_for_operators_in_scope_only(client, world):
    alerts = {a["camera"]: a for a in world.storage.alerts()}
    mine, theirs = alerts["cam"], alerts["cam2"]  # polres-a, polres-b
    data = keep_frame(world, mine)
    keep_frame(world, theirs)
    path = f"/api/v1/alerts/{mine['id']}/evidence"
    for who, status in ((None, 401), ("revoked", 401), ("polres-a", 403)):
        assert client.get(path, headers=world.auth(who)).status_code == status
        res = client.post(path, headers=world.auth(who), json={"why": "x"})
        assert res.status_code == status
    (frame,) = client.get(path, headers=world.auth("operator-a")).json()["items"]
    res = client.get(frame["url"], headers=world.auth("operator-a"))
    assert res.status_code == 200 and res.content == data
    assert res.headers["content-type"] == "image/jpeg"
    # Out of scope: the alert, its frames and a frame named by id are all 404.
    other = f"/api/v1/alerts/{theirs['id']}/evidence"
    assert client.get(other, headers=world.auth("operator-a")).status_code == 404
    res = client.post(other, headers=world.auth("operator-a"), json={"why": "curious"})
    assert res.status_code == 404
    (their_frame,) = client.get(other, headers=world.auth("admin")).json()["items"]
    assert client.get(their_frame["url"], headers=world.auth("operator-a")).status_code == 404
    assert client.get("/api/v1/evidence/999.jpg", headers=world.auth("admin")).status_code == 404
    # Frames kept already are answered without asking the agent; the request is audited.
    res = client.post(
        path, headers=world.auth("operator-a"), json={"by": "Bripka Andi", "why": "kirim unit?"}
    )
    assert res.status_code == 200 and len(res.json()["items"]) == 1
    audit = world.storage.evidence_audit(mine["site"], mine["agent"], mine["alert_id"])
    assert (audit[0]["who"], audit[0]["why"], audit[0]["outcome"]) == (
        "operator-a: Bripka Andi", "kirim unit?", "kept",
    )  # fmt: skip
    # A `why` is required.
    assert client.post(path, headers=world.auth("operator-a"), json={}).status_code == 422


def test_a_request_no_agent_answers_is_504_and_audited(client, world):
    alert = next(a for a in world.storage.alerts() if a["camera"] == "cam")
    res = client.post(
        f"/api/v1/alerts/{alert['id']}/evidence",
        headers=world.auth("operator-a"),
        json={"why": "check", "timeout": 1},
    )
    assert res.status_code == 504, res.text
    audit = world.storage.evidence_audit(alert["site"], alert["agent"], alert["alert_id"])
    assert audit[0]["outcome"] == "timeout" and audit[0]["who"] == "operator-a"
