"""A small stored world for the read-API tests: two sites, three cameras in two jurisdictions,
counts, an open alert per camera, a seq gap per agent, and tokens of every role and a few
scopes (one revoked)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from pantau.agent.wire.protocol import (
    AlertMessage,
    AlertPayload,
    CountsMessage,
    CountsPayload,
    LineCount,
)
from pantau.central.config import CentralSettings
from pantau.central.scope import Scope
from pantau.central.storage import Received, Storage

from tests.datapath.test_registry import status
from tests.datapath.test_storage import T0

# site/agent/camera -> jurisdiction
CAMERAS = {
    "s1/a1/cam": "polres-a",
    "s1/a1/cam2": "polres-b",
    "s2/b1/cx": "polres-b",
}


def bucket(path: str, seq: int, minute: int, people: int = 2) -> Received:
    site, agent, camera = path.split("/")
    msg = CountsMessage(
        msg_id=f"{path}-{seq}",
        seq=seq,
        agent=agent,
        site=site,
        camera=camera,
        created_at=T0,
        payload=CountsPayload(
            bucket_start=T0 + timedelta(minutes=minute),
            bucket_seconds=60,
            observed_seconds=60,
            lines={"door": {"person": LineCount(**{"in": people, "out": 1})}},
        ),
    )
    return Received(msg.topic, msg.encode(), msg)


def alert(path: str, seq: int, alert_id: str, state: str = "raised") -> Received:
    site, agent, camera = path.split("/")
    msg = AlertMessage(
        msg_id=f"{path}-{seq}",
        seq=seq,
        agent=agent,
        site=site,
        camera=camera,
        created_at=T0,
        payload=AlertPayload(
            alert_id=alert_id,
            type="intrusion",
            state=state,
            severity="critical",
            started_at=T0,
            rule="fence",
        ),
    )
    return Received(msg.topic, msg.encode(), msg)


@dataclass
class World:
    storage: Storage
    settings: CentralSettings
    tokens: dict[str, str] = field(default_factory=dict)

    def auth(self, who: str | None) -> dict[str, str]:
        return {} if who is None else {"Authorization": f"Bearer {self.tokens.get(who, who)}"}


def build(url: str, **settings: Any) -> World:
    """Store the world at `url` and make its tokens."""
    cfg = CentralSettings.model_validate(
        {"storage": url, "cameras": {"s2/b1/cx": {"jurisdiction": "polres-b"}}, **settings}
    )
    st = Storage(url, cfg)
    st.store(
        [
            status(
                {
                    "cam": {"jurisdiction": "polres-a", "tags": ["gate"]},
                    "cam2": {"jurisdiction": "polres-b"},
                }
            )
        ]
    )
    # a1: seqs 0-3 and 6 (gap 4-5); b1: 0 and 3 (gap 1-2).
    st.store(
        [bucket("s1/a1/cam", i, i, people=3) for i in range(2)]
        + [bucket("s1/a1/cam2", i, i) for i in (2, 3, 6)]
        + [bucket("s2/b1/cx", i, i, people=5) for i in (0, 3)]
    )
    # One open intrusion per camera (their alert objects get ids 1, 2, 3 in this order).
    st.store(
        [
            alert("s1/a1/cam", 7, "i-cam"),
            alert("s1/a1/cam2", 8, "i-cam2"),
            alert("s2/b1/cx", 4, "i-cx"),
        ]
    )
    world = World(st, cfg)
    for name, role, scope in (
        ("admin", "admin", Scope()),
        ("viewer-all", "viewer", Scope()),
        ("polres-a", "viewer", Scope.of(jurisdictions=["polres-a"])),
        ("polres-b", "viewer", Scope.of(jurisdictions=["polres-b"])),
        ("site-s2", "viewer", Scope.of(sites=["s2"])),
        ("operator-a", "operator", Scope.of(jurisdictions=["polres-a"])),
        ("admin-a", "admin", Scope.of(jurisdictions=["polres-a"])),
        ("revoked", "admin", Scope()),
    ):
        world.tokens[name] = st.add_token(name, role, scope)
    st.revoke_token("revoked")
    return world
