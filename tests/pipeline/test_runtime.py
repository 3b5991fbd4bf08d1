"""The live agent's runtime: settings it refuses to start with, and the bounded memory of
messages while the outbox refuses writes (a real SQLite outbox on a capped 'disk')."""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pantau.agent.config.agent import AgentSettings
from pantau.agent.delivery.outbox import Outbox
from pantau.agent.runtime import LiveAgent, OutboxSink, StartError

from tests.datapath.test_outbox import T0, alert, counts


def full_outbox(path: Path) -> Outbox:
    """An empty outbox whose file may not grow: a batch that needs a new page is refused, and
    there is nothing stored to drop to make room."""
    ob = Outbox(path, agent="a", site="s")
    pages = ob._db.execute("PRAGMA page_count").fetchone()[0]
    ob._db.execute(f"PRAGMA max_page_count = {pages}")
    return ob


def label(item: tuple[str, str, Any]) -> str:
    """a<i> for alert i, c<i> for the counts of minute i."""
    kind, _, payload = item
    if kind == "alerts":
        return str(payload.alert_id)
    return f"c{(payload.bucket_start - T0) // timedelta(minutes=1)}"


def test_waiting_messages_are_bounded_oldest_counts_first(tmp_path: Path, caplog) -> None:
    ob = full_outbox(tmp_path / "o.db")
    woken: list[int] = []
    sink = OutboxSink(ob, lambda: woken.append(1), limit=12)
    with caplog.at_level(logging.WARNING, logger="pantau.agent.runtime"):
        sink([alert(0)] + [counts(i) for i in range(9)])
        assert len(sink.waiting) == 10 and sink.dropped == 0 and len(ob) == 0
        sink([counts(i) for i in range(9, 13)] + [alert(1)])
        sink([counts(13), counts(14)])
    assert len(sink.waiting) == 12 and sink.dropped == 5
    assert [label(i) for i in sink.waiting] == (
        ["a0"] + [f"c{i}" for i in range(5, 13)] + ["a1", "c13", "c14"]
    )
    assert not woken
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2 and "keeping up to 12" in warnings[0]
    assert "dropping the oldest counts" in warnings[1]

    ob._db.execute("PRAGMA max_page_count = 1073741823")  # the disk has room again
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pantau.agent.runtime"):
        sink([counts(15)])
    assert woken == [1] and sink.waiting == [] and sink.dropped == 0
    assert "5 were dropped" in caplog.records[0].getMessage()
    stored = [m.payload.bucket_start for m in ob.messages("counts")]
    assert stored == [counts(i)[2].bucket_start for i in range(5, 16)]
    assert [m.payload.alert_id for m in ob.messages("alerts")] == ["a0", "a1"]


def test_alerts_are_dropped_only_when_nothing_else_is_left(tmp_path: Path) -> None:
    sink = OutboxSink(full_outbox(tmp_path / "o.db"), lambda: None, limit=3)
    sink([counts(0), counts(1)] + [alert(i) for i in range(30)])
    assert [label(i) for i in sink.waiting] == ["a27", "a28", "a29"]
    assert sink.dropped == 29


def test_start_refuses_unusable_settings_and_opens_nothing(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox.db"
    with pytest.raises(StartError, match="the config has no cameras"):
        LiveAgent(AgentSettings(buffer={"path": outbox})).start()
    with pytest.raises(StartError, match="cameras without a source: door"):
        LiveAgent(AgentSettings(buffer={"path": outbox}, cameras={"door": {}})).start()
    agent = LiveAgent(
        AgentSettings(
            buffer={"path": outbox},
            model="no-such-model",
            cameras={"door": {"source": str(tmp_path / "x.mp4")}},
        )
    )
    with pytest.raises(StartError, match="models build"):
        agent.start()
    assert agent.stop() == 0 and not outbox.exists()
