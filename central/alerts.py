"""Alert objects: one per condition episode, with a life (raised, updated, acknowledged,
cleared), made from the agents' alert messages and central's count rules, each change logged
as an `alerts` event in the transaction that made it.

An agent alert message that raises a condition (site, agent, camera, type, rule) for which an
object is open joins that object (an update) instead of opening another: a restarted agent's
re-announced conditions match what is open. Each agent alert_id is linked to its object and
open until the agent clears it; the object clears when its last open alert_id does, when
central finds its camera or agent silent for `alerts.offline_clear_after` (cleared_by
"central: offline"; a re-announce of one of its alert_ids opens it again), or when an operator
clears it ("operator: NAME"). Count rules' alerts (source "central") are raised and cleared by
central ("central: rule").

The functions here run inside the caller's storage transaction.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Final

from pantau.agent.wire.errors import PantauError
from pantau.agent.wire.protocol import AlertMessage, format_time
from pantau.central.events import Event
from pantau.central.scope import Scope

if TYPE_CHECKING:
    from pantau.central.storage.base import Storage

OPEN: Final = "open"
CLEARED: Final = "cleared"
BY_AGENT: Final = "agent"
BY_OFFLINE: Final = "central: offline"
BY_RULE: Final = "central: rule"
OPERATOR: Final = "operator: "

_SELECT = (
    "SELECT o.id, o.alert_id, o.source, o.site, o.agent, o.camera, c.jurisdiction, o.type, "
    "o.severity, o.rule, o.state, o.raised_at, o.updated_at, o.cleared_at, o.cleared_by, "
    "o.clear_note, o.acknowledged_at, o.acknowledged_by, o.ack_note, o.details, o.changes "
    "FROM alert_objects o LEFT JOIN cameras c ON c.site = o.site AND c.agent = o.agent "
    "AND c.camera = o.camera"
)
_INSERT = (
    "INSERT INTO alert_objects (site, agent, camera, source, alert_id, type, severity, rule, "
    "state, raised_at, updated_at, cleared_at, cleared_by, details) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id"
)


class AlertNotFound(PantauError, KeyError):
    """No alert object has this id."""

    def __init__(self, alert: int) -> None:
        super().__init__(f"no alert with id {alert}")
        self.alert = alert

    def __str__(self) -> str:
        return str(self.args[0])


def iso(epoch: float) -> str:
    return format_time(datetime.fromtimestamp(epoch, timezone.utc))


def as_dict(row: tuple[Any, ...]) -> dict[str, Any]:
    """An alert object as storage, the CLI, the API and events show it."""
    (id_, alert_id, source, site, agent, camera, jurisdiction, type_, severity, rule, state,
     raised, updated, cleared, cleared_by, clear_note, acked, acked_by, ack_note, details,
     changes) = row  # fmt: skip
    return {
        "id": int(id_), "alert_id": alert_id, "source": source, "site": site, "agent": agent,
        "camera": camera or None,
        "camera_path": f"{site}/{agent}/{camera}" if camera else None,
        "jurisdiction": jurisdiction, "type": type_, "severity": severity, "rule": rule or None,
        "state": state, "raised_at": raised, "updated_at": updated, "cleared_at": cleared,
        "cleared_by": cleared_by, "clear_note": clear_note, "acknowledged_at": acked,
        "acknowledged_by": acked_by, "ack_note": ack_note, "details": json.loads(details),
        "changes": int(changes),
    }  # fmt: skip


def scope_where(scope: Scope) -> tuple[list[str], list[Any]]:
    """SQL conditions (on `o` objects joined with `c` cameras) that keep exactly what `scope`
    covers (Scope.covers): a site-wide alert (no camera) only for scopes without jurisdictions
    or cameras, an unknown jurisdiction only for scopes without jurisdictions."""
    clauses: list[str] = []
    args: list[Any] = []
    for column, values in (
        ("o.site", scope.sites),
        ("c.jurisdiction", scope.jurisdictions),
        ("o.site || '/' || o.agent || '/' || o.camera", scope.cameras),
    ):
        if values is None:
            continue
        if not values:
            return ["1 = 0"], []
        clauses.append(f"{column} IN ({', '.join('?' * len(values))})")
        args += sorted(values)
    if scope.jurisdictions is not None or scope.cameras is not None:
        clauses.append("o.camera <> ''")
    return clauses, args


def fetch(st: Storage, where: str = "1 = 1", args: list[Any] | None = None,
          tail: str = "") -> list[dict[str, Any]]:  # fmt: skip
    return [as_dict(r) for r in st.fetch(f"{_SELECT} WHERE {where} {tail}", args or [])]


def one(st: Storage, alert: int) -> dict[str, Any]:
    found = fetch(st, "o.id = ?", [alert])
    if not found:
        raise AlertNotFound(alert)
    return found[0]


def changed(st: Storage, alert: int, action: str) -> Event:
    """The event of the change just made to object `alert` (its dict as it is now)."""
    body = one(st, alert)
    return Event(
        "alerts", action, body["site"], body["agent"], body["camera"], body["updated_at"],
        f"alert:{alert}:{action}:{body['changes']}", body, body["jurisdiction"],
    )  # fmt: skip


def _open_for(st: Storage, site: str, agent: str, camera: str, type_: str, rule: str) -> int | None:
    return st.one(
        "SELECT id FROM alert_objects WHERE site = ? AND agent = ? AND camera = ? AND type = ? "
        "AND rule = ? AND state = 'open'",
        (site, agent, camera, type_, rule),
    )


def create(
    st: Storage, key: tuple[str, str, str, str, str], source: str, alert_id: str,
    severity: str, raised_at: str, updated_at: str, details: dict[str, Any],
    cleared: tuple[str, str] | None = None,
) -> int:  # fmt: skip
    """A new object for condition `key` (site, agent, camera, type, rule), open, or cleared at
    `cleared` (when, by whom); its id."""
    site, agent, camera, type_, rule = key
    state, at, by = (OPEN, None, None) if cleared is None else (CLEARED, *cleared)
    row = (site, agent, camera, source, alert_id, type_, severity, rule, state, raised_at,
           updated_at, at, by, json.dumps(details))  # fmt: skip
    return int(st.one(_INSERT, row))


def clear(st: Storage, alert: int, at: str, by: str, when: str, note: str | None = None,
          details: dict[str, Any] | None = None) -> bool:  # fmt: skip
    """Clear object `alert` if it is open (at `at`, by `by`, recorded at `when`); whether it
    was."""
    sets, args = "", []
    if details is not None:
        sets, args = ", details = ?", [json.dumps(details)]
    return bool(st.execute(
        "UPDATE alert_objects SET state = 'cleared', cleared_at = ?, cleared_by = ?, "
        f"clear_note = ?, updated_at = ?, changes = changes + 1{sets} "
        "WHERE id = ? AND state = 'open'",
        [at, by, note, when, *args, alert],
    ).rowcount)  # fmt: skip


def on_message(st: Storage, msg: AlertMessage, duplicate: bool) -> list[Event]:
    """What a stored (or, with `duplicate`, already stored) agent alert message changes."""
    p = msg.payload
    link = st.execute(
        "SELECT object, open FROM alert_links WHERE site = ? AND agent = ? AND alert_id = ?",
        (msg.site, msg.agent, p.alert_id),
    ).fetchone()
    when = format_time(msg.created_at)
    if p.state == "raised":
        if duplicate:
            return _reannounced(st, msg, link, when)
        return [] if link is not None else _raised(st, msg, when)
    if duplicate:
        return []
    if link is None:  # its raise never arrived (or not yet): the whole episode at once
        key = (msg.site, msg.agent, msg.camera, p.type, p.rule or "")
        ended = format_time(p.ended_at or msg.created_at)
        made = create(st, key, "agent", p.alert_id, p.severity, format_time(p.started_at), when,
                      p.details, (ended, BY_AGENT))  # fmt: skip
        _link(st, msg, made, False)
        return [changed(st, made, "clear")]
    object_, _ = link
    st.execute(
        "UPDATE alert_links SET open = 0 WHERE site = ? AND agent = ? AND alert_id = ?",
        (msg.site, msg.agent, p.alert_id),
    )
    still = st.one(
        "SELECT COUNT(*) FROM alert_links WHERE site = ? AND object = ? AND open = 1",
        (msg.site, object_),
    )
    ended = format_time(p.ended_at or msg.created_at)
    if still == 0 and clear(st, object_, ended, BY_AGENT, when):
        return [changed(st, object_, "clear")]
    return []


def _link(st: Storage, msg: AlertMessage, object_: int, open_: bool) -> None:
    st.execute(
        "INSERT INTO alert_links (site, agent, alert_id, object, open) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (site, agent, alert_id) DO UPDATE SET object = excluded.object, "
        "open = excluded.open",
        (msg.site, msg.agent, msg.payload.alert_id, object_, int(open_)),
    )


def _raised(st: Storage, msg: AlertMessage, when: str) -> list[Event]:
    p = msg.payload
    key = (msg.site, msg.agent, msg.camera, p.type, p.rule or "")
    found = _open_for(st, *key)
    if found is None:
        made = create(st, key, "agent", p.alert_id, p.severity, format_time(p.started_at), when,
                      p.details)  # fmt: skip
        _link(st, msg, made, True)
        return [changed(st, made, "raise")]
    _link(st, msg, found, True)
    st.execute(
        "UPDATE alert_objects SET severity = ?, details = ?, updated_at = ?, "
        "changes = changes + 1 WHERE id = ?",
        (p.severity, json.dumps(p.details), when, found),
    )
    return [changed(st, found, "update")]


def _reannounced(
    st: Storage, msg: AlertMessage, link: tuple[Any, ...] | None, when: str
) -> list[Event]:
    """A raise stored before, sent again (a resend, or a restarted agent re-announcing a
    condition that still holds): an object central cleared as offline opens again."""
    if link is None or not link[1]:
        return []
    object_ = link[0]
    row = st.execute(
        "SELECT site, agent, camera, type, rule, state, cleared_by FROM alert_objects WHERE id = ?",
        (object_,),
    ).fetchone()
    if row is None or row[5] != CLEARED or row[6] != BY_OFFLINE:
        return []
    other = _open_for(st, *row[:5])
    if other is not None:  # the condition is open already under another alert_id
        _link(st, msg, other, True)
        return []
    st.execute(
        "UPDATE alert_objects SET state = 'open', cleared_at = NULL, cleared_by = NULL, "
        "clear_note = NULL, updated_at = ?, changes = changes + 1 WHERE id = ?",
        (when, object_),
    )
    return [changed(st, object_, "raise")]


def clear_silent(st: Storage, now: float, after: float) -> list[Event]:
    """Clear the open alerts of cameras or agents not heard from for `after` seconds, and of
    cameras whose health has said offline for that long (except their camera_offline alert:
    that is what it reports)."""
    cutoff = now - after
    when = iso(now)
    stale = st.fetch(
        "SELECT o.id FROM alert_objects o LEFT JOIN cameras c ON c.site = o.site "
        "AND c.agent = o.agent AND c.camera = o.camera LEFT JOIN agents g ON g.site = o.site "
        "AND g.agent = o.agent WHERE o.state = 'open' AND o.camera <> '' AND ("
        "c.last_seen < ? OR g.last_seen < ? OR (c.health = 'offline' AND c.health_at < ? "
        "AND o.type <> 'camera_offline')) ORDER BY o.id",
        (cutoff, cutoff, iso(cutoff)),
    )
    return [changed(st, a, "clear") for (a,) in stale if clear(st, a, when, BY_OFFLINE, when)]


def acknowledge(st: Storage, alert: int, who: str, note: str, now: float) -> list[Event]:
    if not who.strip():
        raise ValueError("an acknowledgement needs who gives it")
    when = iso(now)
    if not st.execute(
        "UPDATE alert_objects SET acknowledged_at = ?, acknowledged_by = ?, ack_note = ?, "
        "updated_at = ?, changes = changes + 1 WHERE id = ?",
        (when, who, note, when, alert),
    ).rowcount:
        raise AlertNotFound(alert)
    return [changed(st, alert, "ack")]


def operator_clear(st: Storage, alert: int, who: str, note: str, now: float) -> list[Event]:
    """Clear by an operator; an alert already cleared stays as it was (no event)."""
    if not who.strip():
        raise ValueError("clearing an alert needs who clears it")
    one(st, alert)  # AlertNotFound
    when = iso(now)
    if clear(st, alert, when, OPERATOR + who, when, note):
        return [changed(st, alert, "clear")]
    return []
