"""`pantau-central`: run the aggregator and read what it stored, as an operator would."""

from __future__ import annotations

import csv
import json
import signal
import sys
import threading
import time
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from pantau.agent.wire.console import (
    ConfigOption,
    fail,
    load_or_exit,
    logging_option,
    out,
    table,
)
from pantau.agent.wire.errors import PantauError
from pantau.central.config import CentralSettings
from pantau.central.scope import Scope

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
app.callback()(logging_option)
export_app = typer.Typer(no_args_is_help=True, help="Export stored data.")
app.add_typer(export_app, name="export")


class Format(str, Enum):
    jsonl = "jsonl"
    csv = "csv"


class Output(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"


class Granularity(str, Enum):
    bucket = "bucket"
    hour = "hour"
    day = "day"


forwarders_app = typer.Typer(no_args_is_help=True, help="Forwarders: queues and dead letters.")
app.add_typer(forwarders_app, name="forwarders")
db_app = typer.Typer(no_args_is_help=True, help="The database's schema.")
app.add_typer(db_app, name="db")
CameraOption = Annotated[
    str | None, typer.Option(help="Only this camera, named SITE/AGENT/CAMERA.")
]


def _storage(settings: CentralSettings, must_exist: bool = True):
    from pantau.agent.wire.settings import redact_url
    from pantau.central.storage import backend_class

    backend = backend_class(settings.storage)
    if must_exist and (why := backend.missing(settings.storage)):
        fail(f"{why} (has `pantau-central run` ever stored anything here?)")
    try:
        return backend(settings.storage, settings)
    except PantauError as exc:  # says which database already
        fail(str(exc))
    except Exception as exc:
        fail(f"cannot open storage {redact_url(settings.storage)}: {str(exc).strip()}")


def _camera(value: str | None):
    """A --camera option as SITE/AGENT/CAMERA, or a clear exit."""
    from pantau.central.storage import CameraRef

    if value is None:
        return None
    try:
        return CameraRef.parse(value)
    except ValueError as exc:
        fail(f"--camera: {exc}")


def _time(name: str, value: str | None) -> str | None:
    """An RFC 3339 option as a UTC time string, or a clear exit."""
    from pantau.central.query import utc_time

    if value is None:
        return None
    try:
        return utc_time(name, value)
    except ValueError as exc:
        fail(str(exc))


def _write(rows: list[dict], fmt: str, columns: list[str], title: str) -> None:
    """Rows as a table, one JSON document, or CSV with a header."""
    if fmt == "json":
        sys.stdout.write(json.dumps(rows, indent=1) + "\n")
    elif fmt == "csv":
        writer = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]) if rows else columns)
        writer.writeheader()
        writer.writerows(rows)
    else:
        table(rows, columns, title=title)


@app.command()
def run(
    config: ConfigOption = None,
    duration: Annotated[
        float, typer.Option(min=0, help="Stop after this many seconds (0: run until signalled).")
    ] = 0.0,
    stats_every: Annotated[
        float, typer.Option(min=0, help="Print ingest counters every N seconds (0: never).")
    ] = 0.0,
) -> None:
    """Receive from the broker and store, until SIGINT/SIGTERM (or --duration)."""
    from pantau.agent.wire.settings import redact_url
    from pantau.central.ingest import Ingest

    settings = load_or_exit(CentralSettings, config)
    # A bad storage URL fails here, clearly; this connection then evaluates count rules and
    # clears silent cameras' alerts, beside ingest's.
    checker = _storage(settings, must_exist=False)
    ingest = Ingest(settings)
    forwarding = None
    if any(f.enabled for f in settings.forwarders.values()):
        from pantau.central.forward.deliver import ForwardProcess, setup_problems

        for problem in setup_problems(settings):
            print(f"warning: {problem}; its events are queued until fixed", file=sys.stderr)
        forwarding = ForwardProcess(settings)
        forwarding.start()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    ingest.start()
    if ingest.conn.wait_connected(10):
        print(
            f"central: connected to {ingest.conn.where}, subscribed to {ingest.subscription}, "
            f"storing into {redact_url(settings.storage)}",
            file=sys.stderr,
            flush=True,
        )
    else:
        print(
            f"warning: not connected to {ingest.conn.where} yet "
            f"({ingest.conn.last_error or 'no answer'}); retrying in the background",
            file=sys.stderr,
            flush=True,
        )
    started = time.monotonic()
    next_stats = started + stats_every
    next_check = started
    while not stop.wait(0.2):
        if ingest.failed:
            fail("ingest stopped after a storage error (see log); nothing unstored was acked", 1)
        now = time.monotonic()
        if now >= next_check:
            _check_alerts(checker)
            next_check = now + settings.alerts.check_every
        if duration and now - started >= duration:
            break
        if stats_every and now >= next_stats:
            print(json.dumps(ingest.stats.__dict__), file=sys.stderr, flush=True)
            next_stats = now + stats_every
    ingest.stop()
    checker.close()
    if forwarding is not None:
        forwarding.stop()
    print(json.dumps(ingest.stats.__dict__))


def _check_alerts(storage) -> None:
    """Count rules and silent cameras' alerts, now; a failure is logged and tried again at
    the next check (ingest goes on)."""
    import logging

    from pantau.central.countrules import check

    try:
        check(storage, time.time())
    except Exception:
        logging.getLogger("pantau.central").exception("evaluating count rules and alerts failed")
        storage.rollback()


@app.command()
def status(config: ConfigOption = None) -> None:
    """What is stored: messages, buckets, alerts, agents, open gaps, dead letters."""
    settings = load_or_exit(CentralSettings, config)
    out.print_json(json.dumps(_storage(settings).summary()))


@app.command()
def agents(
    config: ConfigOption = None,
    cameras: Annotated[bool, typer.Option(help="List cameras instead of agents.")] = False,
) -> None:
    """Agents (or cameras) with state, last seen and how far behind their data is."""
    settings = load_or_exit(CentralSettings, config)
    storage = _storage(settings)
    if cameras:
        table(
            storage.cameras(),
            ["site", "agent", "camera", "last_seen", "health", "health_at"],
            title="Cameras",
        )
        return
    table(
        storage.agents(settings.heartbeat_timeout),
        ["site", "agent", "state", "last_seen", "cameras", "max_seq", "behind", "outbox"],
        title="Agents",
    )


@app.command("cameras")
def cameras_command(
    config: ConfigOption = None,
    jurisdiction: Annotated[
        list[str] | None, typer.Option(help="Only cameras in this jurisdiction (repeatable).")
    ] = None,
    site: Annotated[list[str] | None, typer.Option(help="Only this site (repeatable).")] = None,
    fmt: Annotated[Output, typer.Option("--format", help="Output format.")] = Output.table,
) -> None:
    """The camera registry: where each camera is, whose area it is in, its health and when it
    was last heard from (agents' status, central.yaml `cameras` winning)."""
    settings = load_or_exit(CentralSettings, config)
    rows = _storage(settings).cameras(Scope.of(sites=site, jurisdictions=jurisdiction))
    if fmt is not Output.json:  # flat columns for a table or CSV
        rows = [
            {**r, "location": "" if r["location"] is None else
             f"{r['location']['lat']:.6f},{r['location']['lon']:.6f}", "tags": ",".join(r["tags"])}
            for r in rows
        ]  # fmt: skip
    columns = ["site", "agent", "camera", "jurisdiction", "location", "address", "tags", "health",
               "last_seen"]  # fmt: skip
    _write(rows, fmt.value, columns, "Cameras")


@app.command()
def gaps(
    config: ConfigOption = None,
    open_only: Annotated[
        bool, typer.Option("--open", help="Only gaps still missing data.")
    ] = False,
) -> None:
    """Holes in each agent's seq: what is missing now, and what arrived late or was lost."""
    settings = load_or_exit(CentralSettings, config)
    rows = []
    for g in _storage(settings).gaps(include_closed=not open_only):
        state = "open" if g["closed_at"] is None else ("lost" if g["lost"] else "filled")
        rows.append({**g, "seqs": f"{g['seq_from']}-{g['seq_to']}", "state": state})
    table(
        rows,
        ["site", "agent", "seqs", "state", "missing", "lost", "detected_at", "closed_at"],
        title="Gaps",
    )


@app.command("dead-letters")
def dead_letters(
    config: ConfigOption = None,
    limit: Annotated[int, typer.Option(min=1, help="Newest N.")] = 50,
) -> None:
    """Rejected messages: when, on which topic, why, and the start of the raw bytes."""
    settings = load_or_exit(CentralSettings, config)
    rows = [
        {**r, "payload": bytes(r["payload"] or b"")[:60].decode("utf-8", "replace")}
        for r in _storage(settings).dead_letters(limit)
    ]
    table(rows, ["id", "received_at", "topic", "size", "reason", "payload"], title="Dead letters")


@export_app.command("counts")
def export_counts(
    config: ConfigOption = None,
    fmt: Annotated[Format, typer.Option("--format", help="Output format.")] = Format.jsonl,
    since: Annotated[str | None, typer.Option("--from", help="First bucket (RFC 3339).")] = None,
    until: Annotated[str | None, typer.Option("--to", help="End, exclusive (RFC 3339).")] = None,
    site: Annotated[str | None, typer.Option(help="Only this site.")] = None,
    agent: Annotated[str | None, typer.Option(help="Only this agent.")] = None,
    camera: CameraOption = None,
) -> None:
    """One row per stored bucket, rule and class (the raw export)."""
    settings = load_or_exit(CentralSettings, config)
    since, until = _time("--from", since), _time("--to", until)
    cam = _camera(camera)
    rows = _storage(settings).counts(since=since, until=until, site=site, agent=agent, camera=cam)
    if fmt is Format.jsonl:
        for r in rows:
            sys.stdout.write(json.dumps(r) + "\n")
        return
    writer = None
    for r in rows:
        if writer is None:
            writer = csv.DictWriter(sys.stdout, fieldnames=list(r))
            writer.writeheader()
        writer.writerow(r)


@app.command()
def counts(
    config: ConfigOption = None,
    since: Annotated[str, typer.Option("--from", help="Start (RFC 3339; for --granularity "
                                       "day, the site's local date YYYY-MM-DD).")] = "",
    until: Annotated[str, typer.Option("--to", help="End, exclusive (as --from).")] = "",
    granularity: Annotated[Granularity, typer.Option(help="Raw buckets, UTC hours (shown "
                                                     "with local time), or local days.")] = (
        Granularity.hour
    ),
    site: Annotated[str | None, typer.Option(help="Only this site.")] = None,
    camera: CameraOption = None,
    rule: Annotated[str | None, typer.Option(help="Only this rule (line or zone).")] = None,
    cls: Annotated[str | None, typer.Option("--class", help="Only this class.")] = None,
    fmt: Annotated[Output, typer.Option("--format", help="Output format.")] = Output.table,
) -> None:
    """Totals per camera, rule and class per bucket, hour or day, from the rollups."""
    from pantau.central.query import counts_filter

    settings = load_or_exit(CentralSettings, config)
    try:
        query = counts_filter(granularity.value, since, until, site=site, camera=_camera(camera),
                              rule=rule, cls=cls)  # fmt: skip
    except ValueError as exc:
        fail(str(exc).replace("with granularity", "with --granularity"))
    rows = _storage(settings).rollup(granularity.value, query)
    period = {"bucket": "bucket_start", "hour": "local", "day": "day"}[granularity.value]
    columns = [period, "site", "agent", "camera", "rule", "class", "in", "out", "entries",
               "dwell_mean"]  # fmt: skip
    _write(rows, fmt.value, columns, f"Counts per {granularity.value}")


@app.command()
def patterns(
    site: Annotated[str, typer.Option(help="The site.")],
    config: ConfigOption = None,
    camera: CameraOption = None,
    rule: Annotated[str | None, typer.Option(help="Only this rule (line or zone).")] = None,
    cls: Annotated[str | None, typer.Option("--class", help="Only this class.")] = None,
    weeks: Annotated[int, typer.Option(min=1, max=520, help="Weeks of history.")] = 8,
    fmt: Annotated[Output, typer.Option("--format", help="Output format.")] = Output.table,
) -> None:
    """Visit pattern (pola kunjungan): per local weekday and hour, the mean, median and p90
    of an hour's line crossings (and zone entries, mean dwell) over the last N weeks, with how
    many weeks had data. The table is the 7 x 24 grid of means."""
    from pantau.central.storage.patterns import WEEKDAYS

    settings = load_or_exit(CentralSettings, config)
    cam = _camera(camera)
    if cam is not None and cam.site != site:
        fail(f"--camera {camera} is not in --site {site}")
    found = _storage(settings).pattern(site, weeks=weeks, camera=cam, rule=rule, cls=cls)
    if fmt is not Output.table:
        if fmt is Output.json:
            sys.stdout.write(json.dumps(found, indent=1) + "\n")
        else:
            _write(found["slots"], "csv", [], "")
        return
    grid = []
    for day in WEEKDAYS:
        row: dict[str, object] = {"hari": day}
        for slot in found["slots"]:
            if slot["weekday"] == day:
                mean = slot["mean"] if slot["mean"] is not None else slot["entries_mean"]
                row[f"{slot['hour']:02d}"] = "" if mean is None else f"{mean:g}"
        grid.append(row)
    title = (f"Pola kunjungan {site}: rata-rata per jam, {weeks} minggu, waktu lokal "
             f"{found['timezone']}")  # fmt: skip
    table(grid, ["hari", *(f"{h:02d}" for h in range(24))], title=title)


alerts_app = typer.Typer(
    help="Alerts of agents and count rules (one per condition episode): list them, "
    "acknowledge or clear one.",
)
app.add_typer(alerts_app, name="alerts")
ALERT_COLUMNS = ["id", "raised_at", "state", "severity", "type", "camera_path", "rule",
                 "source", "acknowledged_by", "cleared_at", "cleared_by"]  # fmt: skip


@alerts_app.callback(invoke_without_command=True)
def alerts_list(
    ctx: typer.Context,
    config: ConfigOption = None,
    open_only: Annotated[bool, typer.Option("--open", help="Only alerts not cleared.")] = False,
    site: Annotated[str | None, typer.Option(help="Only this site.")] = None,
    jurisdiction: Annotated[str | None, typer.Option(help="Only cameras of this "
                                                     "jurisdiction (registry).")] = None,
    type: Annotated[str | None, typer.Option("--type", help="Only this alert type.")] = None,
    since: Annotated[str | None, typer.Option("--from", help="Raised at or after (RFC 3339).")]
    = None,
    until: Annotated[str | None, typer.Option("--to", help="Raised before (RFC 3339).")] = None,
    limit: Annotated[int, typer.Option(min=1, help="Newest N.")] = 1000,
    fmt: Annotated[Output, typer.Option("--format", help="Output format.")] = Output.table,
) -> None:
    """Agent and central alerts together, newest raised first."""
    if ctx.invoked_subcommand is not None:
        ctx.obj = config  # `alerts -c FILE ack ...` as well as `alerts ack ... -c FILE`
        return
    settings = load_or_exit(CentralSettings, config)
    rows = _storage(settings).alerts(
        open_only=open_only, since=_time("--from", since), until=_time("--to", until),
        site=site, jurisdiction=jurisdiction, type=type, limit=limit,
    )  # fmt: skip
    if fmt is Output.csv:
        rows = [{**r, "details": json.dumps(r["details"])} for r in rows]
    _write(rows, fmt.value, ALERT_COLUMNS, "Alerts")


AlertId = Annotated[int, typer.Argument(help="The alert's id (first column of `alerts`).")]
ByOption = Annotated[str, typer.Option("--by", help="Who does it (stored, shown to all).")]
NoteOption = Annotated[str, typer.Option(help="A note, stored with it.")]


def _change_alert(config: Path | None, change: str, alert: int, by: str, note: str) -> None:
    from pantau.central.storage import AlertNotFound

    settings = load_or_exit(CentralSettings, config)
    storage = _storage(settings)
    try:
        done = getattr(storage, f"{change}_alert")(alert, by, note)
    except (AlertNotFound, ValueError) as exc:
        fail(str(exc))
    out.print_json(json.dumps(done))


@alerts_app.command("ack")
def alerts_ack(ctx: typer.Context, alert: AlertId, by: ByOption, note: NoteOption = "",
               config: ConfigOption = None) -> None:  # fmt: skip
    """Acknowledge an alert: who, when and a note, visible to everyone who sees it."""
    _change_alert(config or ctx.obj, "ack", alert, by, note)


@alerts_app.command("clear")
def alerts_clear(ctx: typer.Context, alert: AlertId, by: ByOption, note: NoteOption = "",
                 config: ConfigOption = None) -> None:  # fmt: skip
    """Clear an alert as an operator (cleared_by 'operator: NAME')."""
    _change_alert(config or ctx.obj, "clear", alert, by, note)


rules_app = typer.Typer(no_args_is_help=True, help="Count rules (central.yaml count_rules).")
app.add_typer(rules_app, name="rules")


@rules_app.command("check")
def rules_check(
    config: ConfigOption = None,
    fmt: Annotated[Output, typer.Option("--format", help="Output format.")] = Output.table,
) -> None:
    """Evaluate the count rules now and clear the alerts of silent cameras (what `run` does
    every alerts.check_every seconds); show the alerts that changed."""
    from pantau.central.countrules import check

    settings = load_or_exit(CentralSettings, config)
    rows = check(_storage(settings, must_exist=False), time.time())
    _write(rows, fmt.value, ALERT_COLUMNS, "Alerts changed")

@app.command()
def forward(
    config: ConfigOption = None,
    duration: Annotated[
        float, typer.Option(min=0, help="Stop after this many seconds (0: run until signalled).")
    ] = 0.0,
) -> None:
    """Deliver the forwarders' queues (what `run` also does beside ingest), until SIGINT/SIGTERM
    (or --duration)."""
    from pantau.central.forward.deliver import run_forwarding, setup_problems

    settings = load_or_exit(CentralSettings, config)
    if not any(f.enabled for f in settings.forwarders.values()):
        fail("no enabled forwarders in the configuration (forwarders: in central.yaml)")
    if problems := setup_problems(settings):
        fail("; ".join(problems))
    _storage(settings, must_exist=False).close()  # a bad storage URL fails here, clearly
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    if duration:
        timer = threading.Timer(duration, stop.set)
        timer.daemon = True
        timer.start()
    print(f"central: forwarding {', '.join(settings.forwarders)}", file=sys.stderr, flush=True)
    run_forwarding(settings, stop)


@forwarders_app.command("status")
def forwarders_status(
    config: ConfigOption = None,
    fmt: Annotated[Output, typer.Option("--format", help="Output format.")] = Output.table,
) -> None:
    """Per forwarder: backlog, oldest waiting, delivered, last success and error, dead letters."""
    from pantau.central.forward import queue

    settings = load_or_exit(CentralSettings, config)
    rows = queue.status(_storage(settings), settings.forwarders)
    columns = ["forwarder", "type", "backlog", "oldest_waiting", "delivered", "last_success",
               "last_error_at", "last_error", "dead_letters"]  # fmt: skip
    _write(rows, fmt.value, columns, "Forwarders")


@forwarders_app.command("dead-letters")
def forwarders_dead_letters(
    name: Annotated[str, typer.Argument(help="The forwarder.")],
    config: ConfigOption = None,
    limit: Annotated[int, typer.Option(min=1, help="Newest N.")] = 50,
    fmt: Annotated[Output, typer.Option("--format", help="Output format.")] = Output.table,
) -> None:
    """Events a forwarder's target rejected for good, with its answer (status and body)."""
    from pantau.central.forward import queue

    settings = load_or_exit(CentralSettings, config)
    rows = queue.dead_letters(_storage(settings), name, limit)
    columns = ["id", "dead_at", "key", "kind", "camera", "attempts", "status", "answer"]
    _write(rows, fmt.value, columns, f"Dead letters of forwarder {name}")


@forwarders_app.command("retry")
def forwarders_retry(
    name: Annotated[str, typer.Argument(help="The forwarder.")],
    config: ConfigOption = None,
    ids: Annotated[
        list[int] | None, typer.Option("--id", help="Only this dead letter (repeatable).")
    ] = None,
) -> None:
    """Put a forwarder's dead letters back at the end of its queue (once its target is fixed)."""
    from pantau.central.forward import queue

    settings = load_or_exit(CentralSettings, config)
    n = queue.requeue_dead(_storage(settings), name, ids)
    print(f"requeued {n} dead letter{'s' if n != 1 else ''} of forwarder {name}")


@db_app.command("upgrade")
def db_upgrade(config: ConfigOption = None) -> None:
    """Apply pending schema migrations now (central also applies them when it starts)."""
    settings = load_or_exit(CentralSettings, config)
    storage = _storage(settings, must_exist=False)
    print(f"{storage.where}: schema version {storage.schema_version()}")
    storage.close()


credentials_app = typer.Typer(
    no_args_is_help=True,
    help="Broker users: each agent publishes only as itself, only central joins its share "
    "(a Mosquitto dynamic-security file; restart the broker after a change).",
)
app.add_typer(credentials_app, name="credentials")
DynsecOption = Annotated[
    Path,
    typer.Option("--file", "-f", help="Mosquitto dynamic-security file (created if missing)."),
]
PasswordStdin = Annotated[
    bool,
    typer.Option("--password-stdin", help="Read the password from standard input instead of "
                 "generating one."),
]


def _add_user(path: Path, password_stdin: bool, add) -> None:
    from pantau.central.credentials import CredentialsError, DynsecFile, new_password

    password = sys.stdin.readline().rstrip("\n") if password_stdin else new_password()
    if not password:
        fail("the password must not be empty")
    try:
        users = DynsecFile(path)
        user = add(users, password)
        users.save()
    except (CredentialsError, OSError) as exc:
        fail(str(exc))
    typer.echo(f"added {user!r} to {path}; restart the broker to apply", err=True)
    if not password_stdin:
        typer.echo(password)  # shown once, alone on standard output


@credentials_app.command("add")
def credentials_add(
    agent: Annotated[str, typer.Argument(help="The agent as SITE/AGENT.")],
    file: DynsecOption,
    password_stdin: PasswordStdin = False,
) -> None:
    """Add an agent that may publish only under pantau/v1/SITE/AGENT/# and subscribe only to
    its own ack topic; prints its generated password once."""
    _add_user(file, password_stdin, lambda users, pw: users.add_agent(agent, pw))


@credentials_app.command("central")
def credentials_central(
    user: Annotated[str, typer.Argument(help="Broker user name of the central workers.")],
    file: DynsecOption,
    group: Annotated[str, typer.Option(help="Shared-subscription group (config `group`).")] = (
        "central"
    ),
    password_stdin: PasswordStdin = False,
) -> None:
    """Add the user central's workers log in as: the only one that may join the share."""
    _add_user(file, password_stdin, lambda users, pw: users.add_central(user, pw, group))


@credentials_app.command("list")
def credentials_list(file: DynsecOption) -> None:
    """The users in the file with their roles."""
    from pantau.central.credentials import CredentialsError, DynsecFile

    try:
        users = DynsecFile(file)
    except CredentialsError as exc:
        fail(str(exc))
    roles = {c["username"]: ", ".join(r["rolename"] for r in c["roles"])
             for c in users.data["clients"]}
    table(({"user": u, "role": roles[u]} for u in users.users()), ["user", "role"], "Users")


@credentials_app.command("remove")
def credentials_remove(user: Annotated[str, typer.Argument()], file: DynsecOption) -> None:
    """Remove a user (its sessions end when the broker restarts)."""
    from pantau.central.credentials import CredentialsError, DynsecFile

    try:
        users = DynsecFile(file)
        users.remove(user)
        users.save()
    except (CredentialsError, OSError) as exc:
        fail(str(exc))
    typer.echo(f"removed {user!r} from {file}; restart the broker to apply", err=True)


evidence_app = typer.Typer(
    no_args_is_help=True,
    help="Evidence on request: frames of one alert, fetched from its agent for an operator "
    "(nothing leaves an agent unasked), with an audit of every request.",
)
app.add_typer(evidence_app, name="evidence")
SiteOption = Annotated[str | None, typer.Option("--site", help="Only this site.")]
AgentOption = Annotated[str | None, typer.Option("--agent", help="Only this agent.")]
AlertOption = Annotated[str | None, typer.Option("--alert", help="Only this alert id.")]


@evidence_app.command("request")
def evidence_request(
    site: Annotated[str, typer.Option(help="The alert's site.")],
    agent: Annotated[str, typer.Option(help="The alert's agent.")],
    alert: Annotated[str, typer.Option(help="The alert id (as the agent raised it).")],
    by: Annotated[str, typer.Option("--by", help="Who asks (recorded in the audit).")],
    why: Annotated[str, typer.Option(help="Why (recorded in the audit).")],
    config: ConfigOption = None,
    camera: Annotated[str | None, typer.Option(help="The alert's camera; default: from the "
                                               "stored alert.")] = None,
    timeout: Annotated[float, typer.Option(min=1, help="Seconds to wait for the agent.")] = 30.0,
    fmt: Annotated[Output, typer.Option("--format", help="Output format.")] = Output.table,
) -> None:
    """Ask the alert's agent for its frames, keep them, and list them; exit 1 when none came
    (not found, expired, disabled, or no answer)."""
    from pantau.central.evidence import EvidenceUnavailable, request_evidence

    settings = load_or_exit(CentralSettings, config)
    storage = _storage(settings, must_exist=False)
    if camera is None:
        found = storage.fetch("SELECT DISTINCT camera FROM alerts WHERE site = ? AND agent = ? "
                              "AND alert_id = ?", (site, agent, alert))  # fmt: skip
        if len(found) != 1:
            fail(f"alert {alert} of {site}/{agent} is not stored here: name its --camera")
        camera = found[0][0]
    try:
        rows = request_evidence(settings, storage, {"site": site, "agent": agent,
                                "camera": camera, "alert_id": alert}, by, why, timeout)
    except ValueError as exc:
        fail(str(exc))
    except EvidenceUnavailable as exc:
        fail(str(exc), 1)
    _write(rows, fmt.value, EVIDENCE_TABLE, f"Evidence of alert {alert}")


EVIDENCE_TABLE = ["id", "site", "agent", "camera", "alert_id", "idx", "taken_at",
                  "offset_seconds", "width", "height", "size"]  # fmt: skip


@evidence_app.command("list")
def evidence_list(
    config: ConfigOption = None,
    site: SiteOption = None,
    agent: AgentOption = None,
    alert: AlertOption = None,
    fmt: Annotated[Output, typer.Option("--format", help="Output format.")] = Output.table,
) -> None:
    """Frames kept at central (fetch one with `evidence save ID`)."""
    settings = load_or_exit(CentralSettings, config)
    rows = _storage(settings).evidence_for(site, agent, alert)
    _write(rows, fmt.value, EVIDENCE_TABLE, "Evidence")


@evidence_app.command("audit")
def evidence_audit(
    config: ConfigOption = None,
    site: SiteOption = None,
    agent: AgentOption = None,
    alert: AlertOption = None,
    limit: Annotated[int, typer.Option(min=1, help="Newest N.")] = 100,
    fmt: Annotated[Output, typer.Option("--format", help="Output format.")] = Output.table,
) -> None:
    """Every evidence request, newest first: who asked, when, why, and what came of it."""
    settings = load_or_exit(CentralSettings, config)
    rows = _storage(settings).evidence_audit(site, agent, alert, limit)
    _write(rows, fmt.value, ["at", "who", "why", "site", "agent", "camera", "alert_id",
                             "outcome", "frames", "detail"], "Evidence requests")  # fmt: skip


@evidence_app.command("save")
def evidence_save(
    evidence_id: Annotated[int, typer.Argument(help="The frame's id (see `evidence list`).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the JPEG.")],
    config: ConfigOption = None,
) -> None:
    """Write one kept frame to a JPEG file."""
    settings = load_or_exit(CentralSettings, config)
    jpeg = _storage(settings).evidence_jpeg(evidence_id)
    if jpeg is None:
        fail(f"no evidence frame {evidence_id}")
    output.write_bytes(jpeg)
    typer.echo(f"wrote {output} ({len(jpeg)} bytes)", err=True)

tokens_app = typer.Typer(
    no_args_is_help=True,
    help="API tokens: each with a role (viewer reads, operator also acknowledges alerts, admin "
    "also manages tokens) and a scope (jurisdictions or sites); only a hash is stored.",
)
app.add_typer(tokens_app, name="tokens")
ListOption = Annotated[str | None, typer.Option(help="Comma-separated names.")]


def _names(value: str | None) -> list[str] | None:
    return None if value is None else [v.strip() for v in value.split(",") if v.strip()]


class Role(str, Enum):
    viewer = "viewer"
    operator = "operator"
    admin = "admin"


@tokens_app.command("create")
def tokens_create(
    name: Annotated[str, typer.Option(help="Who holds it, e.g. polres-balikpapan.")],
    role: Annotated[Role, typer.Option(help="viewer, operator or admin.")],
    config: ConfigOption = None,
    jurisdictions: Annotated[
        str | None, typer.Option(help="Only cameras of these jurisdictions (comma-separated).")
    ] = None,
    sites: Annotated[str | None, typer.Option(help="Only these sites (comma-separated).")] = None,
    all_cameras: Annotated[bool, typer.Option("--all", help="Every camera.")] = False,
) -> None:
    """Create a token and print it once, alone on standard output (only its hash is kept)."""
    from pantau.central.tokens import TokenError

    given = [_names(jurisdictions), _names(sites)]
    if all_cameras == any(v is not None for v in given):
        fail("give the token's scope: --jurisdictions A,B and/or --sites X,Y, or --all")
    if any(v == [] for v in given):
        fail("--jurisdictions and --sites need at least one name")
    scope = Scope.of(sites=given[1], jurisdictions=given[0])
    settings = load_or_exit(CentralSettings, config)
    try:
        secret = _storage(settings, must_exist=False).add_token(name, role.value, scope, "cli")
    except TokenError as exc:
        fail(str(exc))
    typer.echo(f"created token {name!r} ({role.value}, {scope.describe()}); it is shown once, "
               "keep it now", err=True)  # fmt: skip
    typer.echo(secret)


@tokens_app.command("list")
def tokens_list(
    config: ConfigOption = None,
    fmt: Annotated[Output, typer.Option("--format", help="Output format.")] = Output.table,
) -> None:
    """Tokens with role, scope, and when created or revoked (never their secrets)."""
    settings = load_or_exit(CentralSettings, config)
    rows = [t.to_json() for t in _storage(settings, must_exist=False).tokens()]
    if fmt is not Output.json:
        rows = [{**r, "scope": Scope.from_json(r["scope"]).describe()} for r in rows]
    _write(rows, fmt.value, ["name", "role", "scope", "created_at", "revoked_at"], "Tokens")


@tokens_app.command("revoke")
def tokens_revoke(
    name: Annotated[str, typer.Argument(help="The token's name.")],
    config: ConfigOption = None,
) -> None:
    """Revoke a token: requests with it are refused at once."""
    from pantau.central.tokens import TokenError

    settings = load_or_exit(CentralSettings, config)
    try:
        _storage(settings, must_exist=False).revoke_token(name)
    except TokenError as exc:
        fail(str(exc))
    typer.echo(f"revoked token {name!r}", err=True)


@app.command()
def serve(
    config: ConfigOption = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port.")] = 8080,
) -> None:
    """The read API (OpenAPI at /api/v1/openapi.json) and its live stream, for bearer tokens
    from `pantau-central tokens create`. Put a TLS proxy in front of it beyond localhost."""
    import uvicorn
    from pantau.central.api.app import create_app

    settings = load_or_exit(CentralSettings, config)
    _storage(settings, must_exist=False).close()  # a bad storage URL fails here, clearly
    # Open streams end within the grace period on SIGINT/SIGTERM (browsers reconnect).
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info",
                timeout_graceful_shutdown=5)  # fmt: skip
