"""The read API through FastAPI's TestClient over a real SQLite database (and a PostgreSQL
smoke test): every endpoint refuses a missing, unknown or revoked token, never shows data outside
the token's scope (a named camera outside it is 404, lists and counts leave it out), answers in
scope correctly, and bounds pages and periods with clear 4xx answers; evidence frames only for
operators whose token covers the alert's camera, every request audited (the agent's side and the
broker round trip: test_evidence.py)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from pantau.central.api.app import Recent, create_app
from pantau.central.storage import CameraRef

from tests.datapath.api_world import World, build
from tests.datapath.test_storage import T0, at

GETS = [
    "/api/v1/cameras",
    "/api/v1/cameras/s1/a1/cam",
    "/api/v1/agents",
    "/api/v1/counts",
    "/api/v1/patterns?site=s1",
    "/api/v1/gaps",
    "/api/v1/stream",
    "/api/v1/tokens",
    "/api/v1/alerts",
    "/api/v1/alerts/1",
]
DAY = T0.date().isoformat()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    # The broker the settings name is not running: an evidence request that must ask an agent
    # times out.
    w = build(f"sqlite:///{tmp_path}/central.db", broker={"port": 1})
    yield w
    w.storage.close()


@pytest.fixture
def client(world: World) -> Iterator[TestClient]:
    with TestClient(create_app(world.settings)) as c:
        yield c


def get(client: TestClient, world: World, who: str | None, path: str, **params) -> dict:
    res = client.get(path, headers=world.auth(who), params=params)
    assert res.status_code == 200, res.text
    return res.json()


@pytest.mark.parametrize("path", GETS)
@pytest.mark.parametrize("who", [None, "revoked", "pantau_not-a-token", ""])
def test_every_endpoint_refuses_without_a_live_token(client, world, path, who):
    res = client.get(path, headers=world.auth(who))
    assert res.status_code == 401, res.text
    assert res.headers["www-authenticate"] == "Bearer"


def test_writes_refuse_without_a_live_token_or_role(client, world):
    for who in (None, "revoked"):
        assert (
            client.post(
                "/api/v1/tokens",
                headers=world.auth(who),
                json={"name": "x", "role": "viewer", "all": True},
            ).status_code
            == 401
        )
        assert client.delete("/api/v1/tokens/polres-a", headers=world.auth(who)).status_code == 401
    for who in (None, "revoked"):
        for action in ("ack", "clear"):
            res = client.post(f"/api/v1/alerts/1/{action}", headers=world.auth(who), json={})
            assert res.status_code == 401
    # A viewer may not acknowledge; a viewer or operator may not manage tokens.
    res = client.post("/api/v1/alerts/1/ack", headers=world.auth("polres-a"), json={})
    assert res.status_code == 403 and "needs operator" in res.json()["detail"]
    for who in ("polres-a", "operator-a"):
        res = client.get("/api/v1/tokens", headers=world.auth(who))
        assert res.status_code == 403 and "needs admin" in res.json()["detail"]


def test_cameras_in_scope_only(client, world):
    every = get(client, world, "admin", "/api/v1/cameras")["items"]
    assert [(c["site"], c["camera"]) for c in every] == [
        ("s1", "cam"),
        ("s1", "cam2"),
        ("s2", "cx"),
    ]
    assert every[0]["jurisdiction"] == "polres-a" and every[0]["tags"] == ["gate"]
    mine = get(client, world, "polres-b", "/api/v1/cameras")["items"]
    assert [c["camera"] for c in mine] == ["cam2", "cx"]
    assert [c["camera"] for c in get(client, world, "site-s2", "/api/v1/cameras")["items"]] == [
        "cx"
    ]
    one = get(client, world, "polres-a", "/api/v1/cameras/s1/a1/cam")
    assert one["camera"] == "cam" and one["last_seen"] is not None
    for who, path in (
        ("polres-a", "/api/v1/cameras/s1/a1/cam2"),
        ("polres-a", "/api/v1/cameras/s2/b1/cx"),
        ("admin", "/api/v1/cameras/s1/a1/none"),
        ("site-s2", "/api/v1/cameras/s1/a1/cam"),
    ):
        res = client.get(path, headers=world.auth(who))
        assert res.status_code == 404 and "scope" in res.json()["detail"]
    # Paging.
    first = get(client, world, "admin", "/api/v1/cameras", limit=2)
    assert len(first["items"]) == 2 and first["next_offset"] == 2
    rest = get(client, world, "admin", "/api/v1/cameras", limit=2, offset=2)
    assert [c["camera"] for c in rest["items"]] == ["cx"] and rest["next_offset"] is None


def test_agents_appear_when_a_camera_is_in_scope(client, world):
    every = get(client, world, "admin", "/api/v1/agents")["items"]
    assert [(a["site"], a["agent"], a["cameras"]) for a in every] == [
        ("s1", "a1", 2),
        ("s2", "b1", 1),
    ]
    assert {"state", "last_seen", "outbox", "behind"} <= set(every[0])
    polres_a = get(client, world, "polres-a", "/api/v1/agents")["items"]
    assert [(a["agent"], a["cameras"]) for a in polres_a] == [("a1", 1)]  # only its camera counted
    assert [a["agent"] for a in get(client, world, "site-s2", "/api/v1/agents")["items"]] == ["b1"]


def test_gaps_of_agents_in_scope(client, world):
    every = get(client, world, "admin", "/api/v1/gaps")["items"]
    assert {(g["agent"], g["seq_from"], g["seq_to"]) for g in every} == {("a1", 4, 5), ("b1", 1, 2)}
    assert [g["agent"] for g in get(client, world, "polres-a", "/api/v1/gaps")["items"]] == ["a1"]
    assert [
        g["agent"] for g in get(client, world, "site-s2", "/api/v1/gaps", open="true")["items"]
    ] == ["b1"]


def test_counts_in_scope_with_local_time(client, world):
    period = {"from": at(0), "to": at(60)}
    hours = get(client, world, "admin", "/api/v1/counts", **period)
    assert hours["timezones"] == {"s1": "Asia/Makassar", "s2": "Asia/Makassar"}
    totals = {(r["site"], r["camera"]): r["in"] for r in hours["items"]}
    assert totals == {("s1", "cam"): 6, ("s1", "cam2"): 6, ("s2", "cx"): 10}
    assert hours["items"][0]["local"].endswith("+08:00")
    # polres-b sees cam2 and cx, never cam; naming cam is a 404.
    theirs = get(client, world, "polres-b", "/api/v1/counts", **period)["items"]
    assert {r["camera"] for r in theirs} == {"cam2", "cx"}
    raw = get(client, world, "polres-b", "/api/v1/counts", granularity="bucket", **period)["items"]
    assert {r["camera"] for r in raw} == {"cam2", "cx"} and len(raw) == 5
    res = client.get(
        "/api/v1/counts", headers=world.auth("polres-b"), params={"camera": "s1/a1/cam", **period}
    )
    assert res.status_code == 404
    one = get(client, world, "polres-a", "/api/v1/counts", camera="s1/a1/cam", **period)
    assert [(r["camera"], r["in"], r["out"]) for r in one["items"]] == [("cam", 6, 2)]
    # A site outside a site-scoped token: 404; local days.
    res = client.get("/api/v1/counts", headers=world.auth("site-s2"), params={"site": "s1"})
    assert res.status_code == 404
    days = get(client, world, "site-s2", "/api/v1/counts", granularity="day", **{"from": DAY})
    assert [(r["site"], r["in"]) for r in days["items"]] == [("s2", 10)]
    # Paging.
    page = get(client, world, "admin", "/api/v1/counts", granularity="bucket", limit=3, **period)
    assert len(page["items"]) == 3 and page["next_offset"] == 3


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({"from": "yesterday"}, "from 'yesterday': not an RFC 3339 time"),
        ({"from": "2025-01-01T00:00:00Z", "to": "2026-06-01T00:00:00Z"}, "more than 400 days"),
        ({"from": at(10), "to": at(0)}, "to must be after from"),
        ({"granularity": "day", "from": at(0)}, "a local date"),
        ({"granularity": "week"}, "granularity"),
        ({"limit": 5000}, "limit"),
        ({"camera": "cam"}, "camera"),
        ({"site": "s1/x"}, "site"),
        ({"to": "0001-01-01T00:00:00+14:00"}, "not an RFC 3339 time"),
    ],
)
def test_counts_bounds_and_bad_parameters_are_clear_4xx(client, world, params, says):
    res = client.get("/api/v1/counts", headers=world.auth("admin"), params=params)
    assert res.status_code == 422, res.text
    assert says in res.text


def test_patterns_in_scope(client, world):
    st = world.storage
    mine = get(client, world, "polres-a", "/api/v1/patterns", site="s1", weeks=2)
    alone = st.pattern("s1", weeks=2, camera=CameraRef("s1", "a1", "cam"))
    assert mine["slots"] == alone["slots"] and mine["timezone"] == "Asia/Makassar"
    assert mine["slots"] != st.pattern("s1", weeks=2)["slots"]  # cam2 is left out
    for who, params in (
        ("polres-a", {"site": "s1", "camera": "s1/a1/cam2"}),
        ("site-s2", {"site": "s1"}),
    ):
        assert (
            client.get("/api/v1/patterns", headers=world.auth(who), params=params).status_code
            == 404
        )
    res = client.get(
        "/api/v1/patterns",
        headers=world.auth("admin"),
        params={"site": "s2", "camera": "s1/a1/cam"},
    )
    assert res.status_code == 422 and "not in site s2" in res.text


def test_admin_manages_tokens_within_its_scope(client, world):
    res = client.post(
        "/api/v1/tokens",
        headers=world.auth("admin"),
        json={"name": "polda", "role": "operator", "jurisdictions": ["polres-a"]},
    )
    assert res.status_code == 201, res.text
    secret = res.json()["token"]
    assert secret.startswith("pantau_") and res.json()["scope"] == {"jurisdictions": ["polres-a"]}
    seen = get(client, world, secret, "/api/v1/cameras")["items"]
    assert [c["camera"] for c in seen] == ["cam"]
    listed = get(client, world, "admin", "/api/v1/tokens")["items"]
    assert "polda" in {t["name"] for t in listed} and all("token" not in t for t in listed)
    assert secret not in str(listed)
    # A scoped admin sees and hands on only what lies within its own scope.
    names = {t["name"] for t in get(client, world, "admin-a", "/api/v1/tokens")["items"]}
    assert names == {"polres-a", "operator-a", "admin-a", "polda"}
    for body in (
        {"name": "wide", "role": "viewer", "all": True},
        {"name": "other", "role": "viewer", "jurisdictions": ["polres-b"]},
    ):
        res = client.post("/api/v1/tokens", headers=world.auth("admin-a"), json=body)
        assert res.status_code == 403 and "scope" in res.text
    assert (
        client.delete("/api/v1/tokens/polres-b", headers=world.auth("admin-a")).status_code == 404
    )
    # Bad requests: same name twice, no scope.
    res = client.post(
        "/api/v1/tokens",
        headers=world.auth("admin"),
        json={"name": "polda", "role": "viewer", "all": True},
    )
    assert res.status_code == 409 and "exists already" in res.text
    res = client.post(
        "/api/v1/tokens", headers=world.auth("admin"), json={"name": "x", "role": "viewer"}
    )
    assert res.status_code == 422
    # Revoked: refused at once.
    res = client.delete("/api/v1/tokens/polda", headers=world.auth("admin"))
    assert res.status_code == 200 and res.json()["revoked_at"] is not None
    assert client.get("/api/v1/cameras", headers=world.auth(secret)).status_code == 401


def test_openapi_document_is_served(client):
    doc = client.get("/api/v1/openapi.json").json()
    assert {"/api/v1/counts", "/api/v1/stream", "/api/v1/cameras"} <= set(doc["paths"])
    assert doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


def test_api_on_postgresql_smoke(storage_url):
    world = build(storage_url())
    try:
        with TestClient(create_app(world.settings)) as client:
            assert client.get("/api/v1/cameras").status_code == 401
            assert client.get("/api/v1/cameras", headers=world.auth("revoked")).status_code == 401
            mine = get(client, world, "polres-b", "/api/v1/cameras")["items"]
            assert [c["camera"] for c in mine] == ["cam2", "cx"]
            rows = get(client, world, "polres-a", "/api/v1/counts", **{"from": at(0), "to": at(60)})
            assert [(r["camera"], r["in"]) for r in rows["items"]] == [("cam", 6)]
            assert (
                client.get("/api/v1/cameras/s2/b1/cx", headers=world.auth("polres-a")).status_code
                == 404
            )
            pattern = get(client, world, "polres-a", "/api/v1/patterns", site="s1")
            assert pattern["site"] == "s1"
    finally:
        world.storage.close()


def test_alerts_in_scope_and_acknowledged_by_operators(client, world):
    every = get(client, world, "admin", "/api/v1/alerts")["items"]
    assert sorted(a["camera_path"] for a in every) == ["s1/a1/cam", "s1/a1/cam2", "s2/b1/cx"]
    ids = {a["camera"]: a["id"] for a in every}
    theirs = get(client, world, "polres-b", "/api/v1/alerts", state="open")["items"]
    assert sorted(a["camera"] for a in theirs) == ["cam2", "cx"]
    assert get(client, world, "site-s2", "/api/v1/alerts", site="s1")["items"] == []
    one = get(client, world, "polres-a", f"/api/v1/alerts/{ids['cam']}")
    assert one["jurisdiction"] == "polres-a" and one["state"] == "open"
    for who, alert in (("polres-a", ids["cam2"]), ("polres-a", ids["cx"]), ("admin", 999)):
        res = client.get(f"/api/v1/alerts/{alert}", headers=world.auth(who))
        assert res.status_code == 404 and "scope" in res.text
    # An operator outside the alert's scope cannot acknowledge it: 404, nothing stored.
    res = client.post(
        f"/api/v1/alerts/{ids['cam2']}/ack", headers=world.auth("operator-a"), json={"note": "x"}
    )
    assert res.status_code == 404
    assert world.storage.alert(ids["cam2"])["acknowledged_at"] is None
    res = client.post(
        f"/api/v1/alerts/{ids['cam']}/ack",
        headers=world.auth("operator-a"),
        json={"by": "Bripka Andi", "note": "unit dikirim"},
    )
    assert res.status_code == 200, res.text
    assert res.json()["acknowledged_by"] == "operator-a: Bripka Andi"
    # Stored, visible to others who see the camera.
    seen = get(client, world, "admin", f"/api/v1/alerts/{ids['cam']}")
    assert seen["ack_note"] == "unit dikirim" and seen["acknowledged_at"] is not None
    res = client.post(
        f"/api/v1/alerts/{ids['cam']}/clear", headers=world.auth("admin"), json={"note": "selesai"}
    )
    assert res.status_code == 200 and res.json()["state"] == "cleared"
    assert [
        a["camera"] for a in get(client, world, "polres-a", "/api/v1/alerts", state="open")["items"]
    ] == []
    # Paging by raised time, and bounded periods.
    first = get(client, world, "admin", "/api/v1/alerts", limit=2)
    assert len(first["items"]) == 2 and first["next_to"] is not None
    for params in (
        {"from": "2025-01-01T00:00:00Z", "to": "2026-06-01T00:00:00Z"},
        {"from": "soon"},
        {"state": "closed"},
    ):
        assert (
            client.get("/api/v1/alerts", headers=world.auth("admin"), params=params).status_code
            == 422
        )


def test_recent_answers_expire_and_stay_bounded():
    recent = Recent(ttl=0.2, size=2)
    made: list[str] = []

    def make(key: str):
        return lambda: made.append(key) or key

    assert recent.get("a", make("a")) == "a" and recent.get("a", make("a")) == "a"
    assert made == ["a"]  # the second came from memory
    time.sleep(0.25)
    recent.get("a", make("a"))
    assert made == ["a", "a"]  # expired: made anew
    recent.get("b", make("b"))
    recent.get("c", make("c"))  # "a" is dropped: at most two are kept
    recent.get("a", make("a"))
    assert made == ["a", "a", "b", "c", "a"]


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
