"""Count rules at central: conditions on stored counts that no single camera's agent judges,
raising and clearing central alerts (source "central") through the same alert objects and
events as the agents' alerts.

- threshold: the line crossings (in + out) and zone entries of the buckets that started in the
  last `window`, against `min` (raise at least that many) or `max` (raise above it), only while
  the site-local `schedule` is on (outside it an open alert clears);
- unusual: the last full hour against the mean of the same local hour of the week over the
  `weeks` weeks before it (the visit pattern), raised when it is `ratio` times more or less and
  differs by `min_difference`, once `min_weeks` weeks of history exist, and only for an hour
  the camera observed (`min_observed`).

Hold and clear (pantau.agent.wire.held) make one condition one alert with a start (when the
condition began) and an end (when it was first gone); their timers live in `rule_state`, so
a restarted central or another worker goes on where the last evaluation stopped. A rule for
one camera raises the alert on that camera (its agent, so that scopes and jurisdictions apply
as to the agent's own alerts); a site-wide rule raises it on agent "central" with no camera.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

from pantau.agent.wire.held import HeldCondition
from pantau.agent.wire.schedule import DailyWindow
from pantau.central import alerts
from pantau.central.config import CountRuleSettings
from pantau.central.events import Event
from pantau.central.storage import rollups
from pantau.central.storage.base import CameraRef

if TYPE_CHECKING:
    from pantau.central.storage.base import Storage

SITE_AGENT: Final = "central"  # the agent of a site-wide rule's alerts
TYPES: Final = {"threshold": "count_threshold", "unusual": "unusual_activity"}
_MEASURE = (
    'CASE WHEN rule_type = \'line\' THEN COALESCE("in", 0) + COALESCE("out", 0) '
    "WHEN rule_type = 'zone' THEN COALESCE(entries, 0) ELSE 0 END"
)


def check(st: Storage, now: float) -> list[dict[str, Any]]:
    """Evaluate every count rule at `now` and clear the alerts of silent cameras: the alert
    objects that changed. On a storage shared by several workers only one evaluates at a time;
    the others return nothing."""
    changed = evaluate(st, now)
    return changed + st.clear_silent_alerts(now)


def evaluate(st: Storage, now: float) -> list[dict[str, Any]]:
    """Evaluate every count rule at `now` in one transaction (skipped when another worker
    holds the evaluation lock); the alert objects raised or cleared."""
    if not st.settings.count_rules:
        return []
    events: list[Event] = []
    st.begin()
    try:
        if st.try_lock("count-rules"):
            for name, rule in sorted(st.settings.count_rules.items()):
                events += _evaluate(st, name, rule, now)
            st._emit(events, alerts.iso(now))
        st.commit()
    except BaseException:
        st.rollback()
        raise
    return [e.body for e in events]


def _place(rule: CountRuleSettings) -> tuple[str, str]:
    """(agent, camera) the rule's alerts are raised on."""
    return rule.agent_camera or (SITE_AGENT, "")


def _where(rule: CountRuleSettings) -> tuple[str, list[Any]]:
    clauses, args = ["site = ?"], [rule.site]
    if rule.agent_camera is not None:
        clauses += ["agent = ?", "camera = ?"]
        args += list(rule.agent_camera)
    if rule.rule is not None:
        clauses.append("rule = ?")
        args.append(rule.rule)
    if rule.classes:
        clauses.append(f"class IN ({', '.join('?' * len(rule.classes))})")
        args += rule.classes
    return " AND ".join(clauses), args


def _evaluate(st: Storage, name: str, rule: CountRuleSettings, now: float) -> list[Event]:
    agent, camera = _place(rule)
    key = (rule.site, agent, camera, TYPES[rule.kind], name)
    open_id = st.one(
        "SELECT id FROM alert_objects WHERE site = ? AND agent = ? AND camera = ? AND type = ? "
        "AND rule = ? AND state = 'open'",
        key,
    )
    if rule.kind == "threshold":
        on, details = _threshold(st, rule, now)
    else:
        on, details = _unusual(st, rule, now)
    if on is None:  # cannot be judged now: nothing changes
        return []
    state = st.execute(
        "SELECT on_since, off_since FROM rule_state WHERE site = ? AND name = ?",
        (rule.site, name),
    ).fetchone()
    held = HeldCondition(rule.hold, rule.clear_after)
    held.active = open_id is not None
    held.on_since, held.off_since = state if state is not None else (None, None)
    if details.get("outside_schedule") and held.active:
        held.reset()
        switched: bool | None = False
        ended = now
    elif on and not held.active and _dismissed(st, key, held.on_since):
        switched, ended = None, now  # an operator cleared this episode: not raised again
    else:
        switched = held.update(on, not on, now)
        ended = held.off_since if held.off_since is not None else now
    st.execute(
        "INSERT INTO rule_state (site, name, on_since, off_since) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (site, name) DO UPDATE SET on_since = excluded.on_since, "
        "off_since = excluded.off_since",
        (rule.site, name, held.on_since, held.off_since),
    )
    when = alerts.iso(now)
    if switched is True:
        start = alerts.iso(held.on_since if held.on_since is not None else now)
        made = alerts.create(st, key, "central", f"{name}@{start}", rule.severity, start, when,
                             {"rule_kind": rule.kind, **details})  # fmt: skip
        return [alerts.changed(st, made, "raise")]
    if switched is False and open_id is not None:
        body = alerts.one(st, open_id)
        final = {**body["details"], "end": details}
        if alerts.clear(st, open_id, alerts.iso(ended), alerts.BY_RULE, when, None, final):
            return [alerts.changed(st, open_id, "clear")]
    return []


def _dismissed(st: Storage, key: tuple[str, ...], on_since: float | None) -> bool:
    """Whether an operator cleared the alert of the episode that began at `on_since` (the
    condition has held since: it raises again only after it has been gone)."""
    if on_since is None:
        return False
    last = st.execute(
        "SELECT raised_at, cleared_by FROM alert_objects WHERE site = ? AND agent = ? AND "
        "camera = ? AND type = ? AND rule = ? ORDER BY id DESC LIMIT 1",
        key,
    ).fetchone()
    return (
        last is not None
        and last[0] == alerts.iso(on_since)
        and str(last[1] or "").startswith(alerts.OPERATOR)
    )


def _threshold(
    st: Storage, rule: CountRuleSettings, now: float
) -> tuple[bool | None, dict[str, Any]]:
    zone = st.settings.zone(rule.site)
    if rule.schedule is not None and not DailyWindow(rule.schedule, zone).contains(now):
        return False, {"outside_schedule": True, "schedule": rule.schedule,
                       "timezone": zone.key}  # fmt: skip
    since = alerts.iso(now - rule.window)
    camera = CameraRef(rule.site, *rule.agent_camera) if rule.agent_camera is not None else None
    # The raw rows, as the export reads them (along the packed buckets' key).
    count = sum(
        (r["in"] or 0) + (r["out"] or 0) if r["rule_type"] == "line" else r["dwell_count"] or 0
        for r in st.counts(since=since, until=alerts.iso(now), site=rule.site, camera=camera,
                           rule=rule.rule)
        if not rule.classes or r["class"] in rule.classes
    )  # fmt: skip
    on = count >= rule.min if rule.min is not None else count > (rule.max or 0)
    details: dict[str, Any] = {"count": count, "window_seconds": rule.window, "from": since,
                               "to": alerts.iso(now)}  # fmt: skip
    details.update({"min": rule.min} if rule.min is not None else {"max": rule.max})
    if rule.schedule is not None:
        details.update(schedule=rule.schedule, timezone=zone.key)
    return on, details


def _unusual(
    st: Storage, rule: CountRuleSettings, now: float
) -> tuple[bool | None, dict[str, Any]]:
    end = rollups.hour_start(now)
    start = end - rollups.HOUR
    where, args = _where(rule)
    seen = st.fetch(
        f"SELECT agent, camera, SUM({_MEASURE}), "
        f"MAX(observed_seconds) FROM hourly WHERE {where} AND hour_start = ? "
        "GROUP BY agent, camera",
        [*args, rollups.iso(start)],
    )
    if not seen or min(r[3] for r in seen) < rule.min_observed * rollups.HOUR:
        return None, {}
    current = sum(int(r[2] or 0) for r in seen)
    zone = st.settings.zone(rule.site)
    local = datetime.fromtimestamp(start, zone)
    slot = local.weekday() * 24 + local.hour
    camera = None
    if rule.agent_camera is not None:
        camera = CameraRef(rule.site, *rule.agent_camera)
    usual, weeks = 0.0, None
    classes: list[str | None] = [*rule.classes] if rule.classes else [None]
    for cls in classes:
        found = st.pattern(rule.site, weeks=rule.weeks, camera=camera, rule=rule.rule, cls=cls,
                           now=start)["slots"][slot]  # fmt: skip
        usual += (found["mean"] or 0.0) + (found["entries_mean"] or 0.0)
        weeks = found["weeks"] if weeks is None else min(weeks, found["weeks"])
    if not weeks or weeks < rule.min_weeks:
        return None, {}
    above = current >= usual * rule.ratio and current - usual >= rule.min_difference
    below = current <= usual / rule.ratio and usual - current >= rule.min_difference
    direction = "above" if above else "below" if below else None
    on = direction is not None and rule.direction in ("both", direction)
    return on, {
        "hour": local.isoformat(timespec="minutes"), "timezone": zone.key, "count": current,
        "usual": round(usual, 3), "weeks": weeks, "direction": direction, "ratio": rule.ratio,
        "min_difference": rule.min_difference,
    }  # fmt: skip
