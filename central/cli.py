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

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
app.callback()(logging_option)
export_app = typer.Typer(no_args_is_help=True, help="Export stored data.")
app.add_typer(export_app, name="export")


class Format(str, Enum):
    jsonl = "jsonl"
    csv = "csv"


def _storage(settings: CentralSettings, must_exist: bool = True):
    from pantau.central.storage import Storage, sqlite_path

    path = sqlite_path(settings.storage)
    if must_exist and not path.exists():
        fail(f"no database at {path} (has `pantau-central run` ever stored anything here?)")
    try:
        return Storage(settings.storage, settings)
    except PantauError as exc:  # says which file already
        fail(str(exc))
    except Exception as exc:
        fail(f"cannot open storage {settings.storage}: {exc}")


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
    from pantau.central.ingest import Ingest

    settings = load_or_exit(CentralSettings, config)
    _storage(settings, must_exist=False).close()  # a bad storage URL fails here, clearly
    ingest = Ingest(settings)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    ingest.start()
    if ingest.conn.wait_connected(10):
        print(
            f"central: connected to {ingest.conn.where}, subscribed to {ingest.subscription}, "
            f"storing into {settings.storage}",
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
    while not stop.wait(0.2):
        if ingest.failed:
            fail("ingest stopped after a storage error (see log); nothing unstored was acked", 1)
        now = time.monotonic()
        if duration and now - started >= duration:
            break
        if stats_every and now >= next_stats:
            print(json.dumps(ingest.stats.__dict__), file=sys.stderr, flush=True)
            next_stats = now + stats_every
    ingest.stop()
    print(json.dumps(ingest.stats.__dict__))


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
    camera: Annotated[str | None, typer.Option(help="Only this camera.")] = None,
) -> None:
    """One row per stored bucket, rule and class."""
    from pantau.agent.wire.protocol import format_time

    settings = load_or_exit(CentralSettings, config)
    bounds: list[str | None] = []
    for name, value in (("--from", since), ("--to", until)):
        if value is None:
            bounds.append(None)
            continue
        try:
            from datetime import datetime, timezone

            t = datetime.fromisoformat(value.replace("Z", "+00:00"))
            bounds.append(format_time(t if t.tzinfo else t.replace(tzinfo=timezone.utc)))
        except ValueError:
            fail(f"{name} {value!r}: not an RFC 3339 time (e.g. 2026-11-27T08:00:00Z)")
    rows = _storage(settings).counts(
        since=bounds[0], until=bounds[1], site=site, agent=agent, camera=camera
    )
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
