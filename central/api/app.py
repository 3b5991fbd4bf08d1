"""The read API's endpoints under /api/v1, over central's storage (one connection per worker
thread): every answer limited to the caller's scope, every list paged, every period bounded."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Hashable
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

from fastapi import APIRouter, FastAPI, Header, HTTPException, Path, Query, Request
from fastapi.responses import Response, StreamingResponse
from pantau.agent.wire.protocol import check_segment
from pantau.central.alerts import AlertNotFound
from pantau.central.api import stream
from pantau.central.api.auth import Admin, Operator, Viewer
from pantau.central.config import CentralSettings
from pantau.central.events import EVENT_KINDS
from pantau.central.evidence import EvidenceUnavailable, request_evidence
from pantau.central.query import counts_filter, utc_time
from pantau.central.scope import Scope
from pantau.central.storage import CameraRef, Storage, open_storage
from pantau.central.tokens import ROLES, Token, TokenError
from pydantic import BaseModel, Field, field_validator
from starlette.concurrency import run_in_threadpool

PREFIX = "/api/v1"
MAX_LIMIT = 1000
MAX_OFFSET = 10_000_000
MAX_DAYS = 400  # the longest period one counts question may span
# The period of a counts question that names no start: a day of buckets, a week of hours, a
# month of days.
DEFAULT_DAYS = {"bucket": 1, "hour": 7, "day": 31}
PATTERN_TTL = 60.0  # seconds one visit pattern answer is reused for the same question
SEGMENT = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
CAMERA = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}/[A-Za-z0-9][A-Za-z0-9._-]{0,63}/[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"  # noqa: E501
LABEL = r"^[^\x00-\x1f\x7f]{1,128}$"  # rule and class names: printable text
NOTE = r"^[^\x00]*$"  # no database stores a NUL in text

Name = Annotated[str | None, Query(pattern=SEGMENT, description="A site, agent or jurisdiction.")]
CameraName = Annotated[
    str | None, Query(pattern=CAMERA, description="A camera, named SITE/AGENT/CAMERA.")
]
Label = Annotated[str | None, Query(pattern=LABEL, description="A rule or class name.")]
Segment = Annotated[str, Path(pattern=SEGMENT)]
Id = Annotated[int, Path(ge=1, le=2**62)]  # an alert's or an evidence frame's
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Most items in this page.")]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Items to skip (paging).")]


class Recent:
    """Answers kept for `ttl` seconds, at most `size` of them (the oldest dropped first): a
    visit pattern spans weeks, so live screens asking it again within a minute may share one
    answer instead of each scanning the weeks."""

    def __init__(self, ttl: float, size: int = 256) -> None:
        self.ttl = ttl
        self.size = size
        self._kept: OrderedDict[Hashable, tuple[float, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, make: Callable[[], Any]) -> Any:
        now = time.monotonic()
        with self._lock:
            kept = self._kept.get(key)
            if kept is not None and now - kept[0] < self.ttl:
                return kept[1]
        value = make()
        with self._lock:
            self._kept[key] = (now, value)
            self._kept.move_to_end(key)
            while len(self._kept) > self.size:
                self._kept.popitem(last=False)
        return value


class Storages:
    """One open Storage per thread (a database connection serves one thread), all closed
    together when the app stops."""

    def __init__(self, settings: CentralSettings) -> None:
        self.settings = settings
        self._local = threading.local()
        self._opened: list[Storage] = []
        self._lock = threading.Lock()

    def get(self) -> Storage:
        storage: Storage | None = getattr(self._local, "storage", None)
        if storage is None:
            storage = open_storage(self.settings.storage, self.settings)
            self._local.storage = storage
            with self._lock:
                self._opened.append(storage)
        return storage

    def close(self) -> None:
        with self._lock:
            for storage in self._opened:
                storage.close()
            self._opened.clear()


def page(rows: list[dict[str, Any]], limit: int, offset: int) -> dict[str, Any]:
    """One page of `rows` (fetched with one row more than `limit`, to know if more follow)."""
    more = len(rows) > limit
    return {"items": rows[:limit], "next_offset": offset + limit if more else None}


class NewToken(BaseModel):
    """A token to create: its scope must lie within the creating admin's."""

    name: str = Field(pattern=SEGMENT, description="Who holds it, e.g. polres-balikpapan.")
    role: Literal["viewer", "operator", "admin"] = Field(description="What it may do.")
    jurisdictions: list[str] | None = Field(
        None, min_length=1, max_length=100, description="Only cameras of these jurisdictions."
    )
    sites: list[str] | None = Field(
        None, min_length=1, max_length=100, description="Only cameras of these sites."
    )
    all: bool = Field(False, description="Every camera (instead of jurisdictions or sites).")

    @field_validator("jurisdictions", "sites")
    @classmethod
    def _names(cls, names: list[str] | None) -> list[str] | None:
        for name in names or []:
            check_segment(name, "name")
        return names


class AlertNote(BaseModel):
    """Who acts on an alert and why: stored with it, visible to everyone who may see it."""

    by: str | None = Field(
        None,
        pattern=LABEL,
        max_length=128,
        description="The person, recorded after the "
        "token's name (the token's name alone when absent).",
    )
    note: str = Field(
        "", max_length=2000, pattern=NOTE, description="Why, what was done (any text but NUL)."
    )

    def who(self, token: Token) -> str:
        return token.name if self.by is None else f"{token.name}: {self.by}"


class EvidenceAsk(AlertNote):
    """An operator's request for the frames of one alert: who (after the token's name) and
    why, both kept in the audit."""

    why: str = Field(min_length=1, max_length=500, pattern=NOTE, description="Why the frames "
                     "are needed (kept in the audit).")  # fmt: skip
    timeout: float = Field(20, ge=1, le=60, description="Seconds to wait for the agent.")


# How a request that brought no frame answers: the agent's refusals are 404 (there is nothing
# to see), no answer is 504, frames that fail their checks 502.
EVIDENCE_STATUS = {"timeout": 504, "bad_reply": 502}


def alert_period(since: str | None, until: str | None) -> tuple[str | None, str | None]:
    """`from`/`to` of an alerts question as UTC times, at most MAX_DAYS apart."""
    first = None if since is None else utc_time("from", since)
    last = None if until is None else utc_time("to", until)
    if first is not None and last is not None:
        counts_filter("bucket", first, last, names=("from", "to"), max_days=MAX_DAYS)
    return first, last


def create_app(settings: CentralSettings) -> FastAPI:
    """The API app over the storage `settings` name."""
    storages = Storages(settings)
    recent_patterns = Recent(PATTERN_TTL)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        storages.close()

    app = FastAPI(
        title="Pantau central read API",
        version="1",
        description="Counts, visit patterns, alerts, gaps and a live stream of what central "
        "stored, for bearer tokens scoped by jurisdiction or site (`pantau-central tokens`).",
        openapi_url=f"{PREFIX}/openapi.json",
        docs_url=f"{PREFIX}/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.storages = storages
    api = APIRouter(prefix=PREFIX)

    def covered_camera(token: Token, name: str) -> CameraRef:
        """The named camera if it exists and the token's scope covers it; else 404 (the
        same answer for both: a scope does not learn what lies outside it)."""
        ref = CameraRef.parse(name)
        found = storages.get().camera(ref)
        if found is None or not token.scope.covers(
            ref.site, ref.agent, ref.camera, found["jurisdiction"]
        ):
            raise HTTPException(404, f"no camera {name} in this token's scope")
        return ref

    def covered_site(token: Token, site: str | None) -> None:
        if site is not None and not token.scope.covers_site(site):
            raise HTTPException(404, f"no site {site} in this token's scope")

    def visible_agents(scope: Scope) -> dict[tuple[str, str], int] | None:
        """Agents the scope may see, with how many of their cameras it covers (None: every
        agent): an agent appears if any of its cameras is in scope."""
        if scope.unrestricted:
            return None
        seen: dict[tuple[str, str], int] = {}
        for cam in storages.get().cameras(scope):
            key = (cam["site"], cam["agent"])
            seen[key] = seen.get(key, 0) + 1
        return seen

    @api.get("/cameras", summary="Cameras in scope: registry entry, health, last seen")
    def cameras(
        token: Viewer,
        site: Name = None,
        jurisdiction: Name = None,
        limit: Limit = MAX_LIMIT,
        offset: Offset = 0,
    ) -> dict[str, Any]:
        rows = [
            r
            for r in storages.get().cameras(token.scope)
            if site in (None, r["site"]) and jurisdiction in (None, r["jurisdiction"])
        ]
        return page(rows[offset : offset + limit + 1], limit, offset)

    @api.get("/cameras/{site}/{agent}/{camera}", summary="One camera (404 outside scope)")
    def camera(token: Viewer, site: Segment, agent: Segment, camera: Segment) -> dict[str, Any]:
        ref = covered_camera(token, f"{site}/{agent}/{camera}")
        return storages.get().camera(ref) or {}

    @api.get("/agents", summary="Agents with a camera in scope: state, last seen, backlog")
    def agents(
        token: Viewer, site: Name = None, limit: Limit = MAX_LIMIT, offset: Offset = 0
    ) -> dict[str, Any]:
        visible = visible_agents(token.scope)
        rows = []
        for r in storages.get().agents(settings.heartbeat_timeout):
            key = (r["site"], r["agent"])
            if site not in (None, r["site"]):
                continue
            if visible is not None:
                if key not in visible and not token.scope.covers(*key, None, None):
                    continue
                r["cameras"] = visible.get(key, 0)  # only those in scope are counted
            rows.append(r)
        return page(rows[offset : offset + limit + 1], limit, offset)

    @api.get(
        "/counts",
        summary="Counts per camera, rule and class per bucket, hour or local day",
        description="Periods: `from`/`to` as RFC 3339 times (granularity bucket or hour) or "
        "the site's local dates YYYY-MM-DD (day), at most 400 days apart; without `from`, a "
        "day of buckets, a week of hours or a month of days before `to` (default now). Hours "
        "are UTC hours shown with their local time (`local`); `timezones` gives each site's "
        "zone.",
    )
    def counts(
        token: Viewer,
        granularity: Literal["bucket", "hour", "day"] = "hour",
        since: Annotated[str | None, Query(alias="from", max_length=40)] = None,
        until: Annotated[str | None, Query(alias="to", max_length=40)] = None,
        site: Name = None,
        camera: CameraName = None,
        rule: Label = None,
        cls: Annotated[str | None, Query(alias="class", pattern=LABEL)] = None,
        limit: Limit = MAX_LIMIT,
        offset: Offset = 0,
    ) -> dict[str, Any]:
        covered_site(token, site)
        ref = None if camera is None else covered_camera(token, camera)
        try:
            query = counts_filter(
                granularity,
                since,
                until,
                site=site,
                camera=ref,
                rule=rule,
                cls=cls,
                scope=token.scope,
                names=("from", "to"),
                default_days=DEFAULT_DAYS[granularity],
                max_days=MAX_DAYS,
            )
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        rows = storages.get().rollup(granularity, query, limit + 1, offset)
        sites = {r["site"] for r in rows} | {s for s in (site, ref and ref.site) if s}
        return {
            "granularity": granularity,
            "from": query.since,
            "to": query.until,
            "timezones": {s: settings.zone(s).key for s in sorted(sites)},
            **page(rows, limit, offset),
        }

    @api.get(
        "/patterns",
        summary="Visit pattern: per local weekday and hour, mean/median/p90 over N weeks",
        description="The same question is answered from one computation for up to a minute.",
    )
    def patterns(
        token: Viewer,
        site: Annotated[str, Query(pattern=SEGMENT, description="The site.")],
        camera: CameraName = None,
        rule: Label = None,
        cls: Annotated[str | None, Query(alias="class", pattern=LABEL)] = None,
        weeks: Annotated[int, Query(ge=1, le=52, description="Weeks of history.")] = 8,
    ) -> dict[str, Any]:
        covered_site(token, site)
        ref = None if camera is None else covered_camera(token, camera)
        if ref is not None and ref.site != site:
            raise HTTPException(422, f"camera {camera} is not in site {site}")
        return recent_patterns.get(
            (site, weeks, ref, rule, cls, token.scope),
            lambda: storages.get().pattern(
                site, weeks=weeks, camera=ref, rule=rule, cls=cls, scope=token.scope
            ),
        )

    def covered_alert(token: Token, alert: int) -> dict[str, Any]:
        found = storages.get().alert(alert)
        if found is None or not token.scope.covers(
            found["site"], found["agent"], found["camera"], found["jurisdiction"]
        ):
            raise HTTPException(404, f"no alert {alert} in this token's scope")
        return found

    @api.get(
        "/alerts",
        summary="Alert objects in scope, newest raised first",
        description="`from`/`to` bound when they were raised (RFC 3339, at most 400 days "
        "apart). When more match than `limit`, `next_to` is the `to` of the next page.",
    )
    def alerts(
        token: Viewer,
        state: Literal["open", "all"] = "all",
        since: Annotated[str | None, Query(alias="from", max_length=40)] = None,
        until: Annotated[str | None, Query(alias="to", max_length=40)] = None,
        site: Name = None,
        jurisdiction: Name = None,
        type: Annotated[str | None, Query(pattern=SEGMENT, description="An alert type.")] = None,
        limit: Limit = MAX_LIMIT,
    ) -> dict[str, Any]:
        try:
            period = alert_period(since, until)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        rows = storages.get().alerts(
            token.scope,
            state == "open",
            *period,
            site=site,
            jurisdiction=jurisdiction,
            type=type,
            limit=limit + 1,
        )
        more = len(rows) > limit
        return {"items": rows[:limit], "next_to": rows[limit - 1]["raised_at"] if more else None}

    @api.get("/alerts/{alert}", summary="One alert object (404 outside scope)")
    def alert(token: Viewer, alert: Id) -> dict[str, Any]:
        return covered_alert(token, alert)

    def change_alert(token: Token, alert: int, change: str, body: AlertNote) -> dict[str, Any]:
        """Acknowledge or clear an alert the token sees, as the token (and `body.by`)."""
        covered_alert(token, alert)
        try:
            return getattr(storages.get(), f"{change}_alert")(alert, body.who(token), body.note)
        except AlertNotFound as exc:  # gone between the two reads
            raise HTTPException(404, str(exc)) from None

    @api.post(
        "/alerts/{alert}/ack",
        summary="Acknowledge an alert (operator or admin): stored, visible to all who see it",
    )
    def ack(token: Operator, alert: Id, body: AlertNote) -> dict[str, Any]:
        return change_alert(token, alert, "ack", body)

    @api.post("/alerts/{alert}/clear", summary="Clear an alert as an operator (operator or admin)")
    def clear(token: Operator, alert: Id, body: AlertNote) -> dict[str, Any]:
        return change_alert(token, alert, "clear", body)

    @api.get(
        "/alerts/{alert}/evidence",
        summary="Evidence frames kept at central for an alert (operator or admin, in scope)",
    )
    def evidence(token: Operator, alert: Id) -> dict[str, Any]:
        found = covered_alert(token, alert)
        return {"items": kept_frames(found)}

    @api.post(
        "/alerts/{alert}/evidence",
        summary="Ask the alert's agent for its frames (operator or admin, in scope; audited)",
        description="Frames already kept at central are answered without asking again. 404 "
        "when the agent has none (not found, expired, evidence disabled), 504 when it does not "
        "answer in time; every request is in the audit (`pantau-central evidence audit`).",
    )
    def ask_evidence(token: Operator, alert: Id, body: EvidenceAsk) -> dict[str, Any]:
        found = covered_alert(token, alert)
        try:
            request_evidence(settings, storages.get(), found, body.who(token), body.why,
                             body.timeout)  # fmt: skip
        except EvidenceUnavailable as exc:
            raise HTTPException(EVIDENCE_STATUS.get(exc.outcome, 404), str(exc)) from None
        return {"items": kept_frames(found)}

    def kept_frames(found: dict[str, Any]) -> list[dict[str, Any]]:
        rows = storages.get().evidence_for(found["site"], found["agent"], found["alert_id"])
        return [
            {**r, "url": f"{PREFIX}/evidence/{r['id']}.jpg"}
            for r in rows
            if r["camera"] == found["camera"]
        ]

    @api.get(
        "/evidence/{frame}.jpg",
        summary="One kept evidence frame as JPEG (operator or admin, in scope)",
        response_class=Response,
        responses={200: {"content": {"image/jpeg": {}}}},
    )
    def evidence_frame(token: Operator, frame: Id) -> Response:
        storage = storages.get()
        meta = storage.evidence_frame(frame)
        if meta is None or not token.scope.covers(
            meta["site"], meta["agent"], meta["camera"],
            storage.jurisdiction(meta["site"], meta["agent"], meta["camera"]),
        ):  # fmt: skip
            raise HTTPException(404, f"no evidence frame {frame} in this token's scope")
        jpeg = storage.evidence_jpeg(frame)
        assert jpeg is not None  # its metadata was just read; frames are never updated
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-store"})

    @api.get("/gaps", summary="Holes in the seqs of agents with a camera in scope")
    def gaps(
        token: Viewer,
        open_only: Annotated[bool, Query(alias="open", description="Only gaps still open.")] = (
            False
        ),
        limit: Limit = MAX_LIMIT,
        offset: Offset = 0,
    ) -> dict[str, Any]:
        visible = visible_agents(token.scope)
        rows = [
            g
            for g in storages.get().gaps(include_closed=not open_only)
            if visible is None
            or (g["site"], g["agent"]) in visible
            or token.scope.covers(g["site"], g["agent"], None, None)
        ]
        return page(rows[offset : offset + limit + 1], limit, offset)

    @api.get(
        "/stream",
        summary="Live server-sent events in scope (alerts, counts; resumable)",
        description="Each event: `id` (send it back as Last-Event-ID to resume), `event` (its "
        "kind) and `data` (the event as JSON: kind, action, site, agent, camera, at, key, "
        "body, jurisdiction). Without Last-Event-ID or `after`, from now on.",
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}}},
    )
    async def live(
        request: Request,
        token: Viewer,
        kinds: Annotated[
            str, Query(pattern=r"^[a-z,]{1,64}$", description="Comma-separated event kinds.")
        ] = "alerts,counts",
        after: Annotated[
            int | None, Query(ge=0, le=2**62, description="Resume after this event id.")
        ] = None,
        last_event_id: Annotated[int | None, Header(alias="Last-Event-ID", ge=0, le=2**62)] = None,
    ) -> StreamingResponse:
        wanted = [k for k in kinds.split(",") if k]
        unknown = sorted(set(wanted) - set(EVENT_KINDS))
        if unknown or not wanted:
            raise HTTPException(422, f"kinds: one or more of {', '.join(EVENT_KINDS)}")
        start = last_event_id if last_event_id is not None else after
        if start is None:  # from now on: fixed before the answer starts, so nothing slips by
            start = await run_in_threadpool(lambda: storages.get().last_event_id())
        body = stream.events(storages.get, token.scope, wanted, start, request.is_disconnected)
        return StreamingResponse(
            body,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @api.get("/tokens", summary="Tokens within the admin's scope (no secrets)")
    def tokens(token: Admin) -> dict[str, Any]:
        rows = [t.to_json() for t in storages.get().tokens() if t.scope.within(token.scope)]
        return {"items": rows, "next_offset": None}

    @api.post("/tokens", status_code=201, summary="Create a token; its secret is shown once")
    def create_token(token: Admin, new: NewToken) -> dict[str, Any]:
        if new.all == (new.jurisdictions is not None or new.sites is not None):
            raise HTTPException(422, "give jurisdictions and/or sites, or all: true")
        scope = Scope.of(sites=new.sites, jurisdictions=new.jurisdictions)
        if not scope.within(token.scope):
            raise HTTPException(
                403, f"a token may not see more than its creator's scope ({token.scope.describe()})"
            )
        if ROLES.index(new.role) > ROLES.index(token.role):
            raise HTTPException(403, "a token may not have a higher role than its creator's")
        try:
            secret = storages.get().add_token(new.name, new.role, scope, token.name)
        except TokenError as exc:
            raise HTTPException(409, str(exc)) from None
        return {"token": secret, "name": new.name, "role": new.role, "scope": scope.to_json()}

    @api.delete("/tokens/{name}", summary="Revoke a token within the admin's scope")
    def revoke_token(token: Admin, name: Segment) -> dict[str, Any]:
        st = storages.get()
        live = [t for t in st.tokens(include_revoked=False) if t.name == name]
        if not live or not live[0].scope.within(token.scope):
            raise HTTPException(404, f"no live token {name!r} in this token's scope")
        return st.revoke_token(name).to_json()

    app.include_router(api)
    return app
