"""Alerts as OASIS CAP 1.2 documents: msgType Alert on raise, Update on update and
acknowledgement, Cancel on clear (these reference the raise), one <info> per language, the
camera's point as the area's circle.

Documents are made from the event alone, so a resend is byte for byte the same: the raise's
identifier depends only on the alert, and its `sent` is when the alert started, which lets an
Update or Cancel name it in <references> without looking anything up."""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from pantau.central.config import CapSettings
from pantau.central.events import Event

NAMESPACE = "urn:oasis:names:tc:emergency:cap:1.2"
CONTENT_TYPE = "application/cap+xml"
ET.register_namespace("", NAMESPACE)  # CAP's namespace as the default: <alert xmlns="...">
MSG_TYPES = {"raise": "Alert", "clear": "Cancel"}  # anything else (update, ack): Update
SEVERITY = {"critical": "Severe", "warning": "Moderate", "info": "Minor"}
# Alert type: CAP category, and the event named in Bahasa Indonesia and in English.
TYPES: dict[str, tuple[str, str, str]] = {
    "intrusion": ("Security", "Penyusupan", "Intrusion"),
    "loitering": ("Security", "Berkeliaran mencurigakan", "Loitering"),
    "crowd": ("Safety", "Kerumunan", "Crowd"),
    "camera_offline": ("Infra", "Kamera mati", "Camera offline"),
    "camera_frozen": ("Infra", "Gambar kamera membeku", "Camera frozen"),
    "camera_tamper": ("Infra", "Kamera diganggu", "Camera tampering"),
    "camera_scene_shift": ("Infra", "Arah kamera berubah", "Camera view changed"),
    "buffer_overflow": ("Infra", "Data agen hilang", "Agent data lost"),
}
HEADLINE = {
    "id-ID": {"raise": "{event} di {place}", "clear": "Selesai: {event} di {place}",
              "ack": "Ditangani: {event} di {place}", "update": "Pembaruan: {event} di {place}"},
    "en-US": {"raise": "{event} at {place}", "clear": "Cleared: {event} at {place}",
              "ack": "Acknowledged: {event} at {place}", "update": "Update: {event} at {place}"},
}  # fmt: skip
DESCRIPTION = {
    "id-ID": "Kamera {camera} melaporkan {event} (tingkat {severity}) sejak {start}.",
    "en-US": "Camera {camera} reports {event} (severity {severity}) since {start}.",
}
ACK = {"id-ID": " Ditangani oleh {by}: {note}", "en-US": " Acknowledged by {by}: {note}"}


@dataclass(frozen=True)
class Place:
    """What the registry knows of the alert's camera."""

    lat: float | None = None
    lon: float | None = None
    address: str | None = None
    description: str | None = None


def _alert_id(event: Event) -> str:
    body = event.body
    return str(body.get("alert_id") or body.get("id") or event.key)


def _digest(text: str, n: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def identifier(event: Event) -> str:
    """Stable per alert and change: the raise has the alert's own identifier."""
    alert = f"pantau-{_digest(f'{event.site}/{event.agent}/{_alert_id(event)}', 24)}"
    return alert if event.action == "raise" else f"{alert}-{_digest(event.key, 12)}"


def cap_time(value: str, zone: ZoneInfo) -> str:
    """RFC 3339 UTC as CAP wants it: local time with its offset, no fraction, no Z, and UTC
    written -00:00 (CAP 1.2, 3.3.2)."""
    t = datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(zone)
    text = t.replace(microsecond=0).isoformat()
    return text[:-6] + "-00:00" if text.endswith("+00:00") else text


def _started(event: Event) -> str:
    body = event.body
    return str(body.get("started_at") or body.get("raised_at") or event.at)


def _sub(parent: ET.Element, tag: str, text: Any = None) -> ET.Element:
    el = ET.SubElement(parent, f"{{{NAMESPACE}}}{tag}")
    if text is not None:
        el.text = str(text)
    return el


def render(event: Event, place: Place | None, settings: CapSettings, zone: ZoneInfo) -> bytes:
    """The CAP 1.2 document of one alert event."""
    if event.kind != "alerts":
        raise ValueError(f"CAP carries alerts only, not {event.kind} events")
    body = event.body
    raise_ = Event(event.kind, "raise", event.site, event.agent, event.camera, event.at,
                   event.key, body)  # fmt: skip
    msg_type = MSG_TYPES.get(event.action, "Update")
    camera = event.camera_path or f"{event.site}/{event.agent}"
    alert_type = str(body.get("type", "unknown"))
    category, *names = TYPES.get(alert_type, ("Other", alert_type, alert_type))
    severity = str(body.get("severity", "warning"))
    place = place or Place()

    root = ET.Element(f"{{{NAMESPACE}}}alert")
    _sub(root, "identifier", identifier(event))
    _sub(root, "sender", settings.sender)
    sent = _started(event) if event.action == "raise" else event.at
    _sub(root, "sent", cap_time(sent, zone))
    _sub(root, "status", "Actual")
    _sub(root, "msgType", msg_type)
    _sub(root, "scope", settings.scope)
    if settings.scope == "Restricted":
        _sub(root, "restriction", settings.restriction)
    if msg_type != "Alert":
        first = f"{settings.sender},{identifier(raise_)},{cap_time(_started(event), zone)}"
        _sub(root, "references", first)
    for language in settings.languages:
        name = names[0] if language == "id-ID" else names[1]
        info = _sub(root, "info")
        _sub(info, "language", language)
        _sub(info, "category", category)
        _sub(info, "event", name)
        _sub(info, "urgency", "Past" if msg_type == "Cancel" else
             "Immediate" if severity == "critical" else "Expected")  # fmt: skip
        _sub(info, "severity", SEVERITY.get(severity, "Unknown"))
        _sub(info, "certainty", "Observed")
        _sub(info, "senderName", settings.sender_name)
        headline = HEADLINE[language].get(event.action, HEADLINE[language]["update"])
        where = place.address or place.description or camera
        _sub(info, "headline", headline.format(event=name, place=where)[:160])
        text = DESCRIPTION[language].format(
            camera=camera, event=name.lower(), severity=severity,
            start=cap_time(_started(event), zone),
        )  # fmt: skip
        if body.get("acknowledged_by"):  # the alert object as central keeps it
            text += ACK[language].format(by=body["acknowledged_by"],
                                         note=body.get("ack_note") or "-")  # fmt: skip
        _sub(info, "description", text)
        for value_name, value in (("pantau:camera", camera), ("pantau:alert_type", alert_type),
                                  ("pantau:alert_id", _alert_id(event))):  # fmt: skip
            param = _sub(info, "parameter")
            _sub(param, "valueName", value_name)
            _sub(param, "value", value)
        area = _sub(info, "area")
        desc = ", ".join(p for p in (place.address, camera, event.jurisdiction) if p)
        _sub(area, "areaDesc", desc)
        if place.lat is not None and place.lon is not None:
            _sub(area, "circle", f"{place.lat},{place.lon} 0")
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)
