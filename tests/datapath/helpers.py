"""Config writers and waiting helpers for the data-path tests."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import yaml


def agent_config(tmp: Path, port: int, name: str = "a1", **buffer: Any) -> Path:
    path = tmp / f"agent-{name}.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "id": name,
                "site": "s1",
                "broker": {"port": port, "reconnect_min": 0.2, "reconnect_max": 1.0},
                "buffer": {"path": str(tmp / f"outbox-{name}.db"), **buffer},
                "heartbeat_seconds": 1,
            }
        )
    )
    return path


def central_config(tmp: Path, port: int) -> Path:
    path = tmp / "central.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "broker": {"port": port, "reconnect_min": 0.2, "reconnect_max": 1.0},
                "storage": f"sqlite:///{tmp}/central.db",
            }
        )
    )
    return path


def central_db(tmp: Path) -> Path:
    return tmp / "central.db"


def query(tmp: Path, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(central_db(tmp))
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


def wait_buckets(tmp: Path, expected: int, timeout: float = 60.0) -> int:
    """Wait until central stored `expected` distinct counts buckets; return what it has."""
    deadline = time.monotonic() + timeout
    got = -1
    while time.monotonic() < deadline:
        if central_db(tmp).exists():
            try:
                got = query(
                    tmp,
                    "SELECT COUNT(*) FROM (SELECT DISTINCT agent, camera, bucket_start "
                    "FROM counts)",
                )[0][0]
            except sqlite3.OperationalError:
                got = -1
            if got >= expected:
                return got
        time.sleep(0.2)
    return got


def line_totals(tmp: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for camera, rule, cls, i, o in query(
        tmp,
        'SELECT camera, rule, class, SUM("in"), SUM("out") FROM counts '
        "WHERE rule_type = 'line' GROUP BY camera, rule, class",
    ):
        out.setdefault(camera, {}).setdefault(rule, {})[cls] = {"in": i, "out": o}
    return out


def summary_of(stdout: str) -> dict[str, Any]:
    return json.loads(stdout)
