"""Central's outgoing event log: one event per stored change, logged once, with the camera's
jurisdiction, kept for retention.events_hours."""

from __future__ import annotations

import time

from pantau.agent.wire.protocol import StatusMessage, StatusPayload
from pantau.central.events import Event
from pantau.central.scope import Scope
from pantau.central.storage import Received

from tests.datapath.test_storage import T0, counts


def test_stored_buckets_and_status_are_logged_once(new_storage):
    st = new_storage()
    st.store([counts(0, 0), counts(1, 1)])
    st.store([counts(0, 0)])  # a resend: no second event
    status = StatusMessage(
        msg_id="st", seq=1, agent="a1", site="s1", created_at=T0,
        payload=StatusPayload(state="offline"),
    )  # fmt: skip
    st.store([Received(status.topic, status.encode(), status)])
    events = st.events_after(0)
    assert [(e.kind, e.action, e.camera) for e in events] == [
        ("counts", "bucket", "cam"),
        ("counts", "bucket", "cam"),
        ("fleet", "offline", None),
    ]
    assert events[0].body["lines"]["door"]["person"]["in"] == 2
    assert [e.id for e in st.events_after(events[0].id or 0, kinds=["fleet"])] == [events[2].id]
    assert st.last_event_id() == events[2].id


def test_events_carry_the_registry_jurisdiction_and_expire(new_storage):
    st = new_storage()
    st.store([counts(0, 0)])
    st.execute("UPDATE cameras SET jurisdiction = 'polres-balikpapan'")
    st.store([counts(1, 1)])
    first, second = st.events_after(0)
    assert (first.jurisdiction, second.jurisdiction) == (None, "polres-balikpapan")

    assert st.maintain()["events"] == 0

    assert st.maintain(now=time.time() + 49 * 3600)["events"] == 2
    assert st.events_after(0) == []


def test_scope_covers_by_site_jurisdiction_and_camera():
    polres = Scope.of(jurisdictions=["polres-a"])
    assert polres.covers("s1", "a1", "cam", "polres-a")
    assert not polres.covers("s1", "a1", "cam", "polres-b")
    assert not polres.covers("s1", "a1", "cam", None)  # unknown jurisdiction: not theirs
    assert not polres.covers("s1", "a1", None, None)  # an agent as a whole spans areas
    site = Scope.of(sites=["s1"])
    assert site.covers("s1", "a1", None, None) and not site.covers("s2", "a1", "cam", None)
    one = Scope.of(cameras=["s1/a1/cam"])
    assert one.covers("s1", "a1", "cam", None) and not one.covers("s1", "a2", "cam", None)
    assert Scope.everything().unrestricted and polres.describe() == "jurisdictions polres-a"
    ev = Event("counts", "bucket", "s1", "a1", "cam", "2026-01-01T00:00:00Z", "k")
    assert ev.camera_path == "s1/a1/cam" and b'"key":"k"' in ev.encode()
