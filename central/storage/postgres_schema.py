"""Central's PostgreSQL schema, version by version (applied by storage.postgres).

`site` leads every primary key and index, so the tables can later be distributed by site
(Citus) without a redesign; `counts` and `buckets` are range-partitioned by bucket time, one
partition per UTC day, created ahead and on demand by central, dropped whole by retention.
"""

from __future__ import annotations

from pantau.agent.wire.migrations import Migration

_SCHEMA_V1 = """
CREATE TABLE messages (
    site TEXT NOT NULL, msg_id TEXT NOT NULL, agent TEXT NOT NULL, camera TEXT,
    kind TEXT NOT NULL, seq BIGINT NOT NULL, created_at TEXT NOT NULL, received_at TEXT NOT NULL,
    PRIMARY KEY (site, msg_id)
);
CREATE INDEX messages_received ON messages (site, received_at);
CREATE TABLE counts (
    site TEXT NOT NULL, agent TEXT NOT NULL, camera TEXT NOT NULL, rule TEXT NOT NULL,
    rule_type TEXT NOT NULL, class TEXT NOT NULL, bucket_start TIMESTAMPTZ NOT NULL,
    bucket_seconds INTEGER NOT NULL, observed_seconds DOUBLE PRECISION NOT NULL,
    "in" BIGINT, "out" BIGINT, occupancy_mean DOUBLE PRECISION, occupancy_max BIGINT,
    dwell_count BIGINT, dwell_mean DOUBLE PRECISION, dwell_p90 DOUBLE PRECISION,
    dwell_max DOUBLE PRECISION,
    PRIMARY KEY (site, agent, camera, bucket_start, rule, class)
) PARTITION BY RANGE (bucket_start);
CREATE TABLE buckets (
    site TEXT NOT NULL, agent TEXT NOT NULL, camera TEXT NOT NULL, start_s BIGINT NOT NULL,
    end_s BIGINT NOT NULL, msg_id TEXT NOT NULL,
    PRIMARY KEY (site, agent, camera, start_s)
) PARTITION BY RANGE (start_s);
CREATE TABLE alerts (
    site TEXT NOT NULL, agent TEXT NOT NULL, camera TEXT NOT NULL, alert_id TEXT NOT NULL,
    state TEXT NOT NULL, type TEXT NOT NULL, severity TEXT NOT NULL, started_at TEXT NOT NULL,
    ended_at TEXT, rule TEXT, details TEXT NOT NULL, created_at TEXT NOT NULL,
    msg_id TEXT NOT NULL,
    PRIMARY KEY (site, agent, alert_id, state)
);
CREATE TABLE health (
    site TEXT NOT NULL, agent TEXT NOT NULL, camera TEXT NOT NULL, created_at TEXT NOT NULL,
    state TEXT NOT NULL, fps_target DOUBLE PRECISION, fps_effective DOUBLE PRECISION,
    frames_read BIGINT, frames_analyzed BIGINT, details TEXT, msg_id TEXT NOT NULL,
    PRIMARY KEY (site, msg_id)
);
CREATE INDEX health_created ON health (site, created_at);
CREATE TABLE agents (
    site TEXT NOT NULL, agent TEXT NOT NULL, status TEXT, status_at TEXT, software TEXT,
    last_seen DOUBLE PRECISION, last_heartbeat DOUBLE PRECISION,
    high_water_seq BIGINT NOT NULL DEFAULT -1, max_seq BIGINT NOT NULL DEFAULT -1,
    outbox_messages BIGINT,
    PRIMARY KEY (site, agent)
);
CREATE TABLE cameras (
    site TEXT NOT NULL, agent TEXT NOT NULL, camera TEXT NOT NULL, last_seen DOUBLE PRECISION,
    health TEXT, health_at TEXT,
    PRIMARY KEY (site, agent, camera)
);
CREATE TABLE seq_ranges (
    site TEXT NOT NULL, agent TEXT NOT NULL, seq_from BIGINT NOT NULL, seq_to BIGINT NOT NULL,
    PRIMARY KEY (site, agent, seq_from)
);
CREATE TABLE gaps (
    site TEXT NOT NULL, agent TEXT NOT NULL, seq_from BIGINT NOT NULL, seq_to BIGINT NOT NULL,
    detected_at TEXT NOT NULL, closed_at TEXT, missing BIGINT NOT NULL,
    lost BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (site, agent, seq_from)
);
-- Rejected messages may name no valid site: a table local to the coordinator under Citus.
CREATE TABLE dead_letters (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, received_at TEXT NOT NULL,
    topic TEXT NOT NULL, size INTEGER NOT NULL, payload BYTEA, reason TEXT NOT NULL
);
CREATE INDEX dead_letters_received ON dead_letters (received_at);
CREATE TABLE hourly (
    site TEXT NOT NULL, agent TEXT NOT NULL, camera TEXT NOT NULL, rule TEXT NOT NULL,
    class TEXT NOT NULL, hour_start TIMESTAMPTZ NOT NULL, rule_type TEXT NOT NULL,
    "in" BIGINT NOT NULL, "out" BIGINT NOT NULL, entries BIGINT NOT NULL,
    dwell_seconds DOUBLE PRECISION NOT NULL, occupancy_seconds DOUBLE PRECISION NOT NULL,
    observed_seconds DOUBLE PRECISION NOT NULL, rows BIGINT NOT NULL,
    PRIMARY KEY (site, agent, camera, rule, class, hour_start)
);
CREATE INDEX hourly_site_time ON hourly (site, hour_start);
CREATE TABLE daily (
    site TEXT NOT NULL, agent TEXT NOT NULL, camera TEXT NOT NULL, rule TEXT NOT NULL,
    class TEXT NOT NULL, day TEXT NOT NULL, rule_type TEXT NOT NULL,
    "in" BIGINT NOT NULL, "out" BIGINT NOT NULL, entries BIGINT NOT NULL,
    dwell_seconds DOUBLE PRECISION NOT NULL, occupancy_seconds DOUBLE PRECISION NOT NULL,
    observed_seconds DOUBLE PRECISION NOT NULL, rows BIGINT NOT NULL,
    PRIMARY KEY (site, agent, camera, rule, class, day)
);
CREATE INDEX daily_site_day ON daily (site, day);
CREATE TABLE sites (site TEXT PRIMARY KEY, timezone TEXT NOT NULL);
-- Several rows per counter (shards, summed when read): concurrent workers never queue on one.
CREATE TABLE counters (
    name TEXT NOT NULL, shard INTEGER NOT NULL, value BIGINT NOT NULL,
    PRIMARY KEY (name, shard)
);
INSERT INTO counters VALUES ('dead_letters_dropped', 0, 0), ('messages', 0, 0),
    ('count_rows', 0, 0), ('buckets', 0, 0);
"""
# v2: agent epochs (a reinstalled agent's seqs start again at 0): seq ranges and gaps are kept
# per epoch, everything stored before under the legacy epoch ''; `epochs` holds each epoch's
# highest stored seq and what its heartbeats said was sent (tail_seq, first said at tail_at), so
# that a tail central never received shows as a gap; `agents.epoch` is the current one.
_SCHEMA_V2 = """
ALTER TABLE seq_ranges ADD COLUMN epoch TEXT NOT NULL DEFAULT '';
ALTER TABLE seq_ranges ALTER COLUMN epoch DROP DEFAULT, DROP CONSTRAINT seq_ranges_pkey,
    ADD PRIMARY KEY (site, agent, epoch, seq_from);
ALTER TABLE gaps ADD COLUMN epoch TEXT NOT NULL DEFAULT '';
ALTER TABLE gaps ALTER COLUMN epoch DROP DEFAULT, DROP CONSTRAINT gaps_pkey,
    ADD PRIMARY KEY (site, agent, epoch, seq_from);
CREATE TABLE epochs (
    site TEXT NOT NULL, agent TEXT NOT NULL, epoch TEXT NOT NULL,
    max_seq BIGINT NOT NULL DEFAULT -1, high_water_seq BIGINT NOT NULL DEFAULT -1,
    tail_seq BIGINT, tail_at DOUBLE PRECISION,
    PRIMARY KEY (site, agent, epoch)
);
INSERT INTO epochs (site, agent, epoch, max_seq, high_water_seq)
    SELECT site, agent, '', max_seq, high_water_seq FROM agents;
ALTER TABLE agents ADD COLUMN epoch TEXT NOT NULL DEFAULT '';
"""
# v3: the outgoing event log (forwarders and live screens read it; kept for
# retention.events_hours) and the camera registry (location, address, jurisdiction, tags: from
# the agent's status message or central.yaml).
_SCHEMA_V3 = """
CREATE TABLE events (
    id BIGSERIAL PRIMARY KEY, at TEXT NOT NULL, recorded_at TEXT NOT NULL,
    kind TEXT NOT NULL, action TEXT NOT NULL, site TEXT NOT NULL, agent TEXT NOT NULL,
    camera TEXT, jurisdiction TEXT, key TEXT NOT NULL UNIQUE, body TEXT NOT NULL
);
CREATE INDEX events_recorded ON events (recorded_at);
ALTER TABLE cameras ADD COLUMN jurisdiction TEXT, ADD COLUMN lat DOUBLE PRECISION,
    ADD COLUMN lon DOUBLE PRECISION, ADD COLUMN address TEXT, ADD COLUMN description TEXT,
    ADD COLUMN tags TEXT;
"""
# v6 (forwarders): each forwarder's durable queue, filled in the transaction that stores the change
# (a copy of the event: the event log keeps only retention.events_hours), its dead letters (what
# the target rejected for good, with its answer) and its delivery state (who holds the delivery
# lease, last success and error).
_SCHEMA_FORWARD = """
-- Per forwarder, not per site: tables local to the coordinator under Citus.
CREATE TABLE forward_queue (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, forwarder TEXT NOT NULL, key TEXT NOT NULL,
    kind TEXT NOT NULL, action TEXT NOT NULL, site TEXT NOT NULL, agent TEXT NOT NULL,
    camera TEXT, jurisdiction TEXT, at TEXT NOT NULL, recorded_at TEXT NOT NULL,
    body TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX forward_queue_order ON forward_queue (forwarder, id);
CREATE TABLE forward_dead (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, forwarder TEXT NOT NULL, key TEXT NOT NULL,
    kind TEXT NOT NULL, action TEXT NOT NULL, site TEXT NOT NULL, agent TEXT NOT NULL,
    camera TEXT, jurisdiction TEXT, at TEXT NOT NULL, recorded_at TEXT NOT NULL,
    body TEXT NOT NULL, attempts INTEGER NOT NULL, dead_at TEXT NOT NULL, status INTEGER,
    answer TEXT NOT NULL
);
CREATE INDEX forward_dead_order ON forward_dead (forwarder, id);
CREATE TABLE forward_state (
    forwarder TEXT PRIMARY KEY, owner TEXT, lease_until DOUBLE PRECISION,
    delivered BIGINT NOT NULL DEFAULT 0,
    last_success_at TEXT, last_error_at TEXT, last_error TEXT, retry_at TEXT
);
"""
# The schema's history, oldest first: a change is a new Migration; a shipped one never changes.
MIGRATIONS = (
    Migration(1, _SCHEMA_V1),
    Migration(2, _SCHEMA_V2),
    Migration(3, _SCHEMA_V3),
    # Placeholders: versions 4 and 5 belong to work merged beside the forwarders (the merge puts
    # theirs here).
    Migration(4, "SELECT 1"),
    Migration(5, "SELECT 1"),
    Migration(6, _SCHEMA_FORWARD),
)
