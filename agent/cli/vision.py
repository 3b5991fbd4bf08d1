"""The vision commands of `pantau-agent`: analyze a recorded file, run the live agent, take a
snapshot with rules drawn, save a camera's health reference frame."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import typer
from pantau.agent.config.agent import AgentSettings, CameraConfig
from pantau.agent.runtime import (
    LiveAgent,
    StartError,
    check_frame,
    decoder_limits,
    load_detectors,
    reference_path,
)
from pantau.agent.wire.console import ConfigOption, err, fail, load_or_exit, out

cameras_app = typer.Typer(no_args_is_help=True, help="Camera set-up helpers.")


def register(app: typer.Typer) -> None:
    """Add the vision commands to the root `pantau-agent` app."""
    app.command("analyze")(analyze)
    app.command("run")(run)
    app.command("snapshot")(snapshot)
    app.add_typer(cameras_app, name="cameras")


def load_agent(config: Path | None) -> AgentSettings:
    """The agent's settings, or a clean exit for a bad file; warnings printed on stderr."""
    settings = load_or_exit(AgentSettings, config)
    for line in settings.warnings():
        err.print(f"warning: {line}", markup=False)
    return settings


def _camera(settings: AgentSettings, name: str) -> CameraConfig:
    if name not in settings.cameras:
        known = ", ".join(settings.cameras) or "none"
        fail(f"unknown camera {name!r} (the config has: {known})")
    return settings.cameras[name]


def _detectors(settings: AgentSettings, models: set[str]) -> dict[str, Any]:
    try:
        return load_detectors(settings, models)
    except StartError as exc:
        fail(str(exc))


def _parse_start(text: str | None, video: Path, frames: int, fps: float, zone: str) -> float:
    """Epoch seconds of the first frame: `text` (a time without offset is in `zone`, the
    agent's), else the file's modification time minus its duration."""
    if text is not None:
        try:
            when = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            fail(f"--start {text!r} is not an RFC 3339 time (e.g. 2024-05-01T18:00:00+08:00)")
        if when.tzinfo is None:
            when = when.replace(tzinfo=ZoneInfo(zone))
        return when.timestamp()
    # A recorder closes its file when it stops: mtime minus the duration is about its start.
    return video.stat().st_mtime - frames / max(fps, 1e-6)


def _mean_dwell(visits: Iterable[list[float]]) -> float | None:
    """Mean dwell in seconds over [count, summed seconds] pairs; None without a visit."""
    count = seconds = 0.0
    for n, total in visits:
        count += n
        seconds += total
    return round(seconds / count, 2) if count else None


def summarize(analytics: Any, frames_read: int, wall: float) -> dict[str, Any]:
    """The `analyze` JSON: totals per line and zone, and the alert episodes. A zone has its
    time-weighted mean and max occupancy, its entries (tracks that came inside) and the mean
    dwell of the visits that ended (None without one), each also per class."""
    t = analytics.totals
    lines = {}
    for rule, by_class in t.lines.items():
        lines[rule] = {
            "in": sum(v[0] for v in by_class.values()),
            "out": sum(v[1] for v in by_class.values()),
            "by_class": {c: {"in": v[0], "out": v[1]} for c, v in by_class.items()},
        }
    zones = {}
    for rule, areas in t.zone_area.items():
        means = {c: a / t.observed if t.observed > 0 else 0.0 for c, a in areas.items()}
        entries = analytics.zone_entries(rule)
        dwell = t.zone_dwell[rule]
        zones[rule] = {
            "mean_occupancy": round(sum(means.values()), 3),
            "max_occupancy": t.zone_peak.get(rule, 0),
            "entries": sum(entries.values()),
            "mean_dwell_seconds": _mean_dwell(dwell.values()),
            "by_class": {
                c: {
                    "mean_occupancy": round(m, 3),
                    "max_occupancy": t.zone_max[rule].get(c, 0),
                    "entries": entries.get(c, 0),
                    "mean_dwell_seconds": _mean_dwell([dwell.get(c, [0, 0.0])]),
                }
                for c, m in means.items()
            },
        }
    episodes: dict[str, dict[str, Any]] = {}
    for a in t.alerts:
        ep = episodes.setdefault(a.alert_id, {"type": a.type})
        if a.rule is not None:
            ep["zone"] = a.rule
        ep["started_at"] = a.started_at.isoformat().replace("+00:00", "Z")
        ep.setdefault("cleared_at", None)
        if a.state == "cleared" and a.ended_at is not None:
            ep["cleared_at"] = a.ended_at.isoformat().replace("+00:00", "Z")
    return {
        "camera": analytics.name,
        "frames_read": frames_read,
        "frames_analyzed": analytics.frames_analyzed,
        "analysis_fps": round(analytics.rate.fps, 2),
        "analysis_fps_reason": analytics.rate.note,
        "wall_seconds": round(wall, 3),
        "lines": lines,
        "zones": zones,
        "alerts": list(episodes.values()),
    }


def _open_video(
    settings: AgentSettings, cam: CameraConfig, video: Path
) -> tuple[Any, tuple[int, int]]:
    """`analyze`'s reader of `video` and its frame size. Decoded in a child process unless
    isolation is off: a file that aborts the decoder ends the command with an error (exit
    code 2) instead of killing it."""
    from pantau.agent.vision.capture import CaptureError, FileReader
    from pantau.agent.vision.isolated import IsolatedReader

    limits = decoder_limits(settings)
    fps = cam.fixed_fps or cam.max_fps  # the highest rate the camera may ask for
    try:
        if limits is None:
            reader = FileReader(video, fps)
            return reader, reader.size
        isolated = IsolatedReader(str(video), fps, realtime=False,
                                  limits=limits).start()
        try:
            size = isolated.wait_ready(limits.hang_seconds)
        except CaptureError:
            isolated.close()
            raise
        if size is None:
            isolated.close()
            fail(f"cannot decode video {video}: no frame within {limits.hang_seconds:.0f}s")
        return isolated, size
    except CaptureError as exc:
        fail(str(exc) if str(video) in str(exc) else f"{video}: {exc}")


def analyze(
    video: Annotated[Path, typer.Argument(help="Recorded video file.")],
    camera: Annotated[str, typer.Option(help="Camera of the config whose rules apply.")],
    json_out: Annotated[Path, typer.Option("--json", help="Where to write the JSON summary.")],
    config: ConfigOption = None,
    annotated: Annotated[
        Path | None, typer.Option(help="Also write an annotated .mp4 (boxes, ids, rules).")
    ] = None,
    start: Annotated[
        str | None,
        typer.Option(help="Wall time of the first frame (RFC 3339; without an offset, in the "
                     "agent's timezone) for schedules and alert times; default the file's "
                     "modification time minus its duration."),
    ] = None,
) -> None:
    """Run the camera's pipeline on a recorded file as fast as the box allows; no broker."""
    import cv2
    from pantau.agent.pipeline.camera import CameraAnalytics
    from pantau.agent.pipeline.scheduler import CameraRunner, Pipeline
    from pantau.agent.vision.capture import CaptureError
    from pantau.agent.vision.draw import draw_rules, draw_tracks

    settings = load_agent(config)
    cam = _camera(settings, camera)
    if not video.is_file():
        fail(f"video file not found: {video}")
    model = cam.model or settings.model
    detectors = _detectors(settings, {model})
    reader, size = _open_video(settings, cam, video)
    try:
        reader.base = _parse_start(
            start, video, reader.frame_count, reader.source_fps, settings.timezone
        )
        analytics = CameraAnalytics(
            camera, cam, detectors[model].names, timezone_name=settings.timezone
        )
        try:
            check_frame(analytics, size)
        except StartError as exc:
            fail(str(exc))
        reader.set_fps(analytics.rate.fps)
        runner = CameraRunner(analytics, reader, model, analytics.rate.fps, cam.input_size)
        writer = None
        if annotated is not None:
            annotated.parent.mkdir(parents=True, exist_ok=True)
            fps = min(cam.fixed_fps or cam.max_fps, reader.source_fps)
            writer = cv2.VideoWriter(str(annotated), cv2.VideoWriter.fourcc(*"mp4v"), fps,
                                     size)
            if not writer.isOpened():
                fail(f"cannot write video {annotated}")

            def write(frame: Any, tracks: Any) -> None:
                image = draw_tracks(draw_rules(frame.image, cam, analytics.totals.lines),
                                    tracks)
                writer.write(image)

            runner.on_frame.append(write)
        pipeline = Pipeline([runner], detectors, bucket_seconds=settings.bucket_seconds)
        began = time.perf_counter()
        try:
            pipeline.run()
        except CaptureError as exc:  # the decoder died part way: no summary of half a file
            fail(str(exc))
        finally:
            pipeline.close()
            if writer is not None:
                writer.release()
    finally:
        reader.close()  # on every way out, so that no decoder process or ring is left
    summary = summarize(analytics, reader.frames_read, time.perf_counter() - began)
    json_out.parent.mkdir(parents=True, exist_ok=True)
    json_out.write_text(json.dumps(summary, indent=2) + "\n")
    out.print_json(json.dumps(summary))


def run(
    config: ConfigOption = None,
    duration: Annotated[
        float | None, typer.Option(min=0, help="Stop after this many seconds.")
    ] = None,
) -> None:
    """The live agent: every camera of the config, counts and alerts through the outbox."""
    from rich.live import Live

    settings = load_agent(config)
    agent = LiveAgent(settings)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        agent.start()
    except StartError as exc:
        fail(str(exc))
    try:
        with Live(get_renderable=lambda: _live_table(agent.pipeline), console=out,
                  refresh_per_second=2, transient=False):
            agent.run_until(stop, duration)
    finally:
        pending = agent.stop()
    out.print(f"stopped; {pending} messages wait in the outbox {settings.buffer.path}")


def _live_table(pipeline: Any) -> Any:
    from rich.table import Table

    table = Table(title="Pantau: live counts", header_style="bold")
    for column in ("camera", "state", "frames", "lines (in/out)", "zones (now)", "alerts"):
        table.add_column(column)
    for r in pipeline.runners:
        a = r.analytics
        lines = ", ".join(
            f"{rule} {sum(v[0] for v in by.values())}/{sum(v[1] for v in by.values())}"
            for rule, by in a.totals.lines.items()
        )
        zones = ", ".join(f"{rule} {sum(z.occupancy.values())}" for rule, z in a.zones.items())
        table.add_row(r.name, a.health.state, f"{a.frames_analyzed}", lines, zones,
                      str(a.totals.alerts_raised))
    return table


def _grab(settings: AgentSettings, camera: str) -> Any:
    from pantau.agent.vision.capture import CaptureError, grab_one

    cam = _camera(settings, camera)
    if not cam.source:
        fail(f"camera {camera} has no source")
    try:
        return grab_one(str(cam.source))
    except CaptureError as exc:
        fail(f"camera {camera}: {exc}")


def snapshot(
    camera: Annotated[str, typer.Argument(help="Camera name in the config.")],
    out_file: Annotated[Path, typer.Option("--out", help="JPEG file to write.")],
    config: ConfigOption = None,
) -> None:
    """Grab one frame with the camera's lines and zones drawn (names, and arrows to each
    line's in and out sides), and the detector's tiles, to check their placement."""
    import cv2
    from pantau.agent.pipeline.camera import CameraAnalytics
    from pantau.agent.vision.detect.store import ModelStore, StoreError
    from pantau.agent.vision.draw import draw_rules, draw_tiles
    from pantau.agent.vision.tiles import Tiler

    settings = load_agent(config)
    frame = _grab(settings, camera)
    cam = settings.cameras[camera]
    height, width = frame.image.shape[:2]
    image = draw_rules(frame.image, cam)
    model = cam.model or settings.model
    try:
        side = cam.input_size or settings.detector.input_size
        size = (side, side) if side else tuple(ModelStore().manifest(model).input_size)
    except StoreError as exc:
        out.print(f"tiles not drawn: {exc}", markup=False)
    else:
        plan = Tiler(cam).plan(width, height, (int(size[0]), int(size[1])))
        draw_tiles(image, plan)
        out.print(f"detector: {plan.note} ({plan.pixels} pixels per frame; a live agent may "
                  "use fewer, larger tiles within its detector budget)", markup=False)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out_file), image):
        fail(f"cannot write {out_file}")
    errors = CameraAnalytics(camera, cam).frame_errors(width, height)
    for line in errors:
        out.print(f"warning: {line}", markup=False)
    out.print(f"wrote {out_file} ({width}x{height}); rule points: {cam.describe_units()}",
              markup=False)


@cameras_app.command("reference")
def cameras_reference(
    camera: Annotated[str, typer.Argument(help="Camera name in the config.")],
    config: ConfigOption = None,
) -> None:
    """Save the camera's current view as the health reference (scene-shift alerts)."""
    import cv2

    settings = load_agent(config)
    frame = _grab(settings, camera)
    path = reference_path(settings, camera)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), frame.image):
        fail(f"cannot write {path}")
    out.print(f"saved the reference of {camera} to {path}")
