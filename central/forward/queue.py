"""Each forwarder's durable queue in central's storage: filled in the transaction that stores a
change, read oldest first by the one process holding the forwarder's lease, settled (delivered
rows deleted, rejected ones moved to the forwarder's dead letters) in one transaction."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from pantau.central.events import Event
from pantau.central.forward.filter import EventFilter

if TYPE_CHECKING:
    from pantau.central.storage.base import Storage

EVENT_COLUMNS = ("key", "kind", "action", "site", "agent", "camera", "jurisdiction", "at",
                 "recorded_at", "body")  # fmt: skip
# Keys looked up or ids deleted per statement.
CHUNK = 500
ANSWER_CHARS = 500  # of a rejecting target's answer kept with the dead letter


@dataclass(frozen=True)
class Queued:
    """One queued event of one forwarder."""

    id: int
    event: Event
    recorded_at: str
    attempts: int


@dataclass
class Outcome:
    """What a target did with a run of queued events: confirmed, rejected for good (status and
    answer), and, if it failed in a way worth retrying, why (the rest stays queued)."""

    delivered: list[int]
    rejected: list[tuple[int, int | None, str]]
    retry: str | None = None
    retry_after: float | None = None


def payload(event: Event) -> dict[str, Any]:
    """The event as forwarders send it (its id in this central's event log is left out)."""
    data = event.to_json()
    data.pop("id", None)
    return data


def encode(event: Event) -> bytes:
    return json.dumps(payload(event), separators=(",", ":"), sort_keys=True).encode()


def filters(settings_forwarders: Mapping[str, Any]) -> dict[str, EventFilter]:
    """The filters of the enabled forwarders, by name."""
    return {name: EventFilter.of(s) for name, s in settings_forwarders.items() if s.enabled}


def enqueue(
    storage: Storage, by_name: Mapping[str, EventFilter], events: Sequence[Event], recorded_at: str
) -> int:
    """Queue `events` (jurisdiction resolved) for every forwarder whose filter matches, in the
    caller's transaction, before the events are logged: an event whose key is logged already
    (the same change recorded again, such as a retained status) was queued then."""
    if not by_name or not events:
        return 0
    keys = list(dict.fromkeys(e.key for e in events))
    logged: set[str] = set()
    for i in range(0, len(keys), CHUNK):
        chunk = keys[i : i + CHUNK]
        marks = ", ".join("?" * len(chunk))
        logged.update(r[0] for r in storage.fetch(f"SELECT key FROM events WHERE key IN ({marks})",
                                                  chunk))  # fmt: skip
    rows = []
    for e in events:
        if e.key in logged:
            continue
        logged.add(e.key)
        body = json.dumps(e.body, separators=(",", ":"))
        rows += [
            (name, e.key, e.kind, e.action, e.site, e.agent, e.camera, e.jurisdiction, e.at,
             recorded_at, body)
            for name, f in by_name.items()
            if f.matches(e)
        ]  # fmt: skip
    storage.insert_rows("forward_queue", ("forwarder", *EVENT_COLUMNS), rows)
    return len(rows)


def with_jurisdictions(
    events: Sequence[Event], where: Mapping[tuple[str, str, str | None], str | None]
) -> list[Event]:
    """`events` with each camera's registry jurisdiction where the event has none."""
    return [
        e if e.jurisdiction else replace(e, jurisdiction=where.get((e.site, e.agent, e.camera)))
        for e in events
    ]


def oldest(storage: Storage, forwarder: str, limit: int) -> list[Queued]:
    rows = storage.fetch(
        f"SELECT id, {', '.join(EVENT_COLUMNS)}, attempts FROM forward_queue "
        "WHERE forwarder = ? ORDER BY id LIMIT ?",
        (forwarder, limit),
    )
    return [
        Queued(i, Event(kind, action, site, agent, camera, at, key, json.loads(body), where),
               recorded, attempts)
        for i, key, kind, action, site, agent, camera, where, at, recorded, body, attempts in rows
    ]  # fmt: skip


def acquire(storage: Storage, forwarder: str, owner: str, seconds: float, now: float) -> bool:
    """Take or renew the forwarder's delivery lease; False while another live process holds
    it."""
    storage.begin()
    try:
        storage.execute(
            "INSERT INTO forward_state (forwarder) VALUES (?) ON CONFLICT (forwarder) DO NOTHING",
            (forwarder,),
        )
        got = storage.execute(
            "UPDATE forward_state SET owner = ?, lease_until = ? WHERE forwarder = ? AND "
            "(owner IS NULL OR owner = ? OR lease_until < ?)",
            (owner, now + seconds, forwarder, owner, now),
        ).rowcount
        storage.commit()
    except BaseException:
        storage.rollback()
        raise
    return bool(got)


def release(storage: Storage, forwarder: str, owner: str) -> None:
    storage.begin()
    try:
        storage.execute(
            "UPDATE forward_state SET owner = NULL, lease_until = NULL WHERE forwarder = ? AND "
            "owner = ?",
            (forwarder, owner),
        )
        storage.commit()
    except BaseException:
        storage.rollback()
        raise


def settle(
    storage: Storage,
    forwarder: str,
    items: Sequence[Queued],
    outcome: Outcome,
    at: str,
    retry_at: str | None,
) -> None:
    """Delete what the target confirmed, dead-letter what it rejected for good, count an
    attempt on the event it failed on, and note success and error, in one transaction."""
    by_id = {q.id: q for q in items}
    storage.begin()
    try:
        for ident, status, answer in outcome.rejected:
            q = by_id[ident]
            e = q.event
            storage.execute(
                f"INSERT INTO forward_dead (forwarder, {', '.join(EVENT_COLUMNS)}, attempts, "
                "dead_at, status, answer) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (forwarder, e.key, e.kind, e.action, e.site, e.agent, e.camera, e.jurisdiction,
                 e.at, q.recorded_at, json.dumps(e.body, separators=(",", ":")),
                 q.attempts + 1, at, status, answer[:ANSWER_CHARS]),
            )  # fmt: skip
        gone = [*outcome.delivered, *(r[0] for r in outcome.rejected)]
        for i in range(0, len(gone), CHUNK):
            chunk = gone[i : i + CHUNK]
            storage.execute(
                f"DELETE FROM forward_queue WHERE id IN ({', '.join('?' * len(chunk))})", chunk
            )
        if outcome.retry is not None:
            done = set(gone)
            waiting = [q.id for q in items if q.id not in done]
            if waiting:
                storage.execute(
                    "UPDATE forward_queue SET attempts = attempts + 1 WHERE id = ?", (waiting[0],)
                )
        error = outcome.retry or (
            f"rejected {outcome.rejected[-1][1]}: {outcome.rejected[-1][2][:200]}"
            if outcome.rejected
            else None
        )
        sets, args = ["delivered = delivered + ?", "retry_at = ?"], [len(outcome.delivered),
                                                                      retry_at]  # fmt: skip
        if outcome.delivered:
            sets.append("last_success_at = ?")
            args.append(at)
        if error is not None:
            sets += ["last_error_at = ?", "last_error = ?"]
            args += [at, error]
        storage.execute(
            f"UPDATE forward_state SET {', '.join(sets)} WHERE forwarder = ?", [*args, forwarder]
        )
        storage.commit()
    except BaseException:
        storage.rollback()
        raise


def requeue_dead(storage: Storage, forwarder: str, ids: Sequence[int] | None = None) -> int:
    """Put the forwarder's dead letters (all, or those with these ids) back at the end of its
    queue, for a target that was fixed; return how many."""
    where, args = "forwarder = ?", [forwarder, *(ids or [])]
    if ids:
        where += f" AND id IN ({', '.join('?' * len(ids))})"
    columns = ", ".join(EVENT_COLUMNS)
    storage.begin()
    try:
        storage.execute(
            f"INSERT INTO forward_queue (forwarder, {columns}) SELECT forwarder, {columns} "
            f"FROM forward_dead WHERE {where} ORDER BY id",
            args,
        )
        n = storage.execute(f"DELETE FROM forward_dead WHERE {where}", args).rowcount
        storage.commit()
    except BaseException:
        storage.rollback()
        raise
    return int(n)


def prune_dead(storage: Storage, forwarder: str, before: str) -> int:
    """Drop the forwarder's dead letters older than `before` (RFC 3339)."""
    storage.begin()
    try:
        n = storage.execute(
            "DELETE FROM forward_dead WHERE forwarder = ? AND dead_at < ?", (forwarder, before)
        ).rowcount
        storage.commit()
    except BaseException:
        storage.rollback()
        raise
    return int(n)


def status(storage: Storage, configured: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per forwarder (configured, or with rows left): backlog, oldest waiting, delivered, last
    success and error, dead letters, who holds the lease."""
    names = set(configured)
    names.update(r[0] for r in storage.fetch("SELECT forwarder FROM forward_state"))
    names.update(r[0] for r in storage.fetch("SELECT DISTINCT forwarder FROM forward_queue"))
    out = []
    for name in sorted(names):
        backlog, oldest_at = storage.fetch(
            "SELECT COUNT(*), MIN(recorded_at) FROM forward_queue WHERE forwarder = ?", (name,)
        )[0]
        state = storage.rows("SELECT * FROM forward_state WHERE forwarder = ?", (name,))
        s = state[0] if state else {}
        settings = configured.get(name)
        out.append({
            "forwarder": name,
            "type": settings.type if settings else "(not configured)",
            "backlog": backlog,
            "oldest_waiting": oldest_at,
            "delivered": s.get("delivered", 0),
            "last_success": s.get("last_success_at"),
            "last_error_at": s.get("last_error_at"),
            "last_error": s.get("last_error"),
            "retry_at": s.get("retry_at"),
            "dead_letters": storage.one(
                "SELECT COUNT(*) FROM forward_dead WHERE forwarder = ?", (name,)
            ),
            "delivering": s.get("owner"),
        })  # fmt: skip
    return out


def dead_letters(storage: Storage, forwarder: str, limit: int) -> list[dict[str, Any]]:
    return storage.rows(
        "SELECT id, dead_at, key, kind, action, site, agent, camera, attempts, status, answer "
        "FROM forward_dead WHERE forwarder = ? ORDER BY id DESC LIMIT ?",
        (forwarder, limit),
    )
