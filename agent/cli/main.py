"""`pantau-agent`: the command line a field technician uses to run, tune and check an agent."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from pantau.agent.cli.common import open_outbox_or_exit
from pantau.agent.cli.models import models_app
from pantau.agent.cli.vision import load_agent, register
from pantau.agent.config.agent import AgentSettings
from pantau.agent.wire.console import (
    ConfigOption,
    VerboseOption,
    err,
    fail,
    load_or_exit,
    out,
    setup_logging,
    table,
)

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
buffer_app = typer.Typer(
    no_args_is_help=True, help="Inspect the local outbox (the offline buffer)."
)
protocol_app = typer.Typer(no_args_is_help=True, help="The MQTT wire protocol.")
app.add_typer(buffer_app, name="buffer")
app.add_typer(protocol_app, name="protocol")
app.add_typer(models_app, name="models")
register(app)


@app.callback()
def main(
    verbose: VerboseOption = False,
) -> None:
    setup_logging(verbose)


@app.command()
def simulate(
    config: ConfigOption = None,
    cameras: Annotated[int, typer.Option(min=1, max=1024, help="Cameras to simulate.")] = 4,
    hours: Annotated[
        float, typer.Option(min=0.0167, max=24 * 31, help="Hours of event time.")
    ] = 1.0,
    start: Annotated[
        str | None,
        typer.Option(
            help="Event time of the first bucket (RFC 3339; default: HOURS before "
            "the start of this hour)."
        ),
    ] = None,
    rate: Annotated[
        float, typer.Option(min=0, help="Most messages generated per second (0: no limit).")
    ] = 0.0,
    seed: Annotated[int, typer.Option(help="Seed of the generator.")] = 1,
    drain_timeout: Annotated[
        float, typer.Option(min=0, help="Seconds to wait for the broker to take everything.")
    ] = 300.0,
) -> None:
    """Generate realistic count buckets through the real outbox and publisher; print a summary.

    A rerun of the same command resumes where an interrupted one stopped.
    """
    from pantau.agent.delivery.publisher import Publisher
    from pantau.agent.delivery.simulate import Plan, parse_start, summarize
    from pantau.agent.delivery.simulate import run as generate

    settings = load_or_exit(AgentSettings, config)
    try:
        first = parse_start(start, settings.bucket_seconds, hours)
    except ValueError as exc:
        fail(f"--start {start!r}: {exc}")
    plan = Plan(
        cameras=cameras, hours=hours, start=first, bucket_seconds=settings.bucket_seconds, seed=seed
    )
    outbox = open_outbox_or_exit(settings)
    publisher = Publisher(settings, outbox, cameras=cameras)
    publisher.start()
    try:
        for _ in generate(plan, outbox, rate=rate, on_batch=publisher.notify):
            pass
        drained = publisher.wait_drained(drain_timeout)
    finally:
        publisher.stop()
    summary = summarize(plan)
    summary.update(
        agent=settings.id,
        site=settings.site,
        delivered=drained,
        pending=len(outbox),
    )
    outbox.close()
    out.print_json(json.dumps(summary))
    if not drained:
        err_msg = (
            f"{summary['pending']} messages are still in the outbox "
            f"({settings.buffer.path}); broker {publisher.conn.where}: "
            f"{publisher.conn.last_error or 'did not acknowledge in time'}. "
            "They are kept and sent by the next run."
        )
        fail(err_msg, code=1)


@buffer_app.command("status")
def buffer_status(config: ConfigOption = None) -> None:
    """How much is waiting in the outbox, by kind, and how old it is."""
    settings = load_or_exit(AgentSettings, config)
    if not settings.buffer.path.exists():
        fail(f"no outbox at {settings.buffer.path} (nothing was ever buffered here)")
    stats = open_outbox_or_exit(settings).stats()
    table(
        [{"kind": k, **v} for k, v in stats.pop("by_kind").items()],
        ["kind", "messages", "oldest"],
        title="Buffered messages",
    )
    for key, value in stats.items():
        out.print(f"{key}: {value}")


@buffer_app.command("export")
def buffer_export(config: ConfigOption = None) -> None:
    """Print every buffered message as JSON lines (topic and message), in publish order."""
    settings = load_or_exit(AgentSettings, config)
    if not settings.buffer.path.exists():
        fail(f"no outbox at {settings.buffer.path}")
    for item in open_outbox_or_exit(settings).export():
        sys.stdout.write(json.dumps(item) + "\n")


@protocol_app.command("schema")
def protocol_schema() -> None:
    """Print the JSON Schema of every message kind."""
    from pantau.agent.wire.protocol import json_schema

    sys.stdout.write(json.dumps(json_schema(), indent=2) + "\n")


@app.command("config")
def check_config(config: ConfigOption = None) -> None:
    """Validate a config file and print the effective settings (secrets hidden) as JSON; on
    stderr, the time zone and rule units in force and each schedule with its zone."""
    settings = load_agent(config)
    context = {"redact": True, "timezone": settings.timezone}
    out.print_json(settings.model_dump_json(context=context))
    for line in in_force(settings):
        err.print(line, markup=False)


def in_force(settings: AgentSettings) -> list[str]:
    """What the settings mean where defaults decide: the time zone and where it came from,
    how each camera's rule points are read, and every schedule with the zone it runs in."""
    lines = [f"timezone: {settings.describe_timezone()}"]
    for name, cam in settings.cameras.items():
        lines.append(f"cameras.{name}: rule points {cam.describe_units()}")
        for rule, zone in cam.zones.items():
            if zone.restricted is not None:
                zone_name = zone.restricted.timezone or settings.timezone
                lines.append(f"cameras.{name}.zones.{rule}: restricted "
                             f"{zone.restricted.schedule} {zone_name}")
    return lines
