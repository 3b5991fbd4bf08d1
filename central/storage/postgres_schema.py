"""Central's PostgreSQL schema, version by version (applied by storage.postgres).

`site` leads every primary key and index, so the tables can later be distributed by site
(Citus) without a redesign; `buckets` (which since v8 hold their count rows packed; `counts` is
a view) is range-partitioned by bucket time, one partition per UTC day, created ahead and on
demand by central, dropped whole by retention.
"""

from __future__ import annotations

from pantau.agent.wire.migrations import Migration
from pantau.central.storage.sqlite_schema import MIGRATE_ALERTS

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
# v4: alert objects, their agent alert_ids and the count rules' timers (as SQLite's v6, which
# see), with the stored alert messages moved into them; `id` is unique on its own (an identity)
# and indexed, the primary key leads with `site`.
_SCHEMA_V4 = (
    """
CREATE TABLE alert_objects (
    id BIGINT GENERATED BY DEFAULT AS IDENTITY, site TEXT NOT NULL, agent TEXT NOT NULL,
    camera TEXT NOT NULL, source TEXT NOT NULL, alert_id TEXT NOT NULL, type TEXT NOT NULL,
    severity TEXT NOT NULL, rule TEXT NOT NULL, state TEXT NOT NULL, raised_at TEXT NOT NULL,
    updated_at TEXT NOT NULL, cleared_at TEXT, cleared_by TEXT, clear_note TEXT,
    acknowledged_at TEXT, acknowledged_by TEXT, ack_note TEXT, details TEXT NOT NULL,
    changes BIGINT NOT NULL DEFAULT 1,
    PRIMARY KEY (site, id)
);
CREATE INDEX alert_objects_id ON alert_objects (id);
CREATE TABLE alert_links (
    site TEXT NOT NULL, agent TEXT NOT NULL, alert_id TEXT NOT NULL, object BIGINT NOT NULL,
    open INTEGER NOT NULL,
    PRIMARY KEY (site, agent, alert_id)
);
CREATE TABLE rule_state (
    site TEXT NOT NULL, name TEXT NOT NULL, on_since DOUBLE PRECISION,
    off_since DOUBLE PRECISION,
    PRIMARY KEY (site, name)
);
"""
    + MIGRATE_ALERTS
)
# v5: API tokens (only a SHA-256 of each secret; the name is unique among tokens not revoked)
# and what each camera's agent last said of it in the registry (`reported`) and central.yaml's
# overrides applied (`overrides`), so the registry columns can be recomputed when either changes.
_SCHEMA_V5 = """
CREATE TABLE tokens (
    hash TEXT PRIMARY KEY, name TEXT NOT NULL, role TEXT NOT NULL, scope TEXT NOT NULL,
    created_at TEXT NOT NULL, created_by TEXT, revoked_at TEXT
);
CREATE UNIQUE INDEX tokens_active_name ON tokens (name) WHERE revoked_at IS NULL;
ALTER TABLE cameras ADD COLUMN reported TEXT;
ALTER TABLE cameras ADD COLUMN overrides TEXT;
"""
# v6 (forwarders): each forwarder's durable queue, filled in the transaction that stores the change
# (a copy of the event: the event log keeps only retention.events_hours), its dead letters (what
# the target rejected for good, with its answer) and its delivery state (who holds the delivery
# lease, last success and error).
_SCHEMA_V6 = """
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
# v7: evidence on request: the frames central fetched from an agent for an operator (one row per
# JPEG) and the audit of every request (who asked, when, why, and what came of it).
_SCHEMA_V7 = """
CREATE TABLE evidence (
    id BIGSERIAL PRIMARY KEY, site TEXT NOT NULL, agent TEXT NOT NULL,
    camera TEXT NOT NULL, alert_id TEXT NOT NULL, idx INTEGER NOT NULL, taken_at TEXT NOT NULL,
    offset_seconds DOUBLE PRECISION NOT NULL, width INTEGER NOT NULL, height INTEGER NOT NULL,
    stored_at TEXT NOT NULL, jpeg BYTEA NOT NULL, sha256 TEXT NOT NULL, size INTEGER NOT NULL,
    UNIQUE (site, agent, alert_id, idx)
);
CREATE TABLE evidence_audit (
    id BIGSERIAL PRIMARY KEY, at TEXT NOT NULL, who TEXT NOT NULL, why TEXT NOT NULL,
    site TEXT NOT NULL, agent TEXT NOT NULL, camera TEXT NOT NULL, alert_id TEXT NOT NULL,
    outcome TEXT NOT NULL, detail TEXT NOT NULL, frames INTEGER NOT NULL
);
CREATE INDEX evidence_audit_alert ON evidence_audit (site, agent, alert_id);
"""
# v8: one row per stored counts bucket: its count rows packed into the bucket's row (see
# storage.packed; a row per rule and class took most of the database), `counts` a view that
# unnests them. The counts partitions go with their table.
_SCHEMA_V8 = """
ALTER TABLE buckets ADD COLUMN observed_seconds DOUBLE PRECISION NOT NULL DEFAULT 0,
    ADD COLUMN lines JSON, ADD COLUMN zones JSON;
ALTER TABLE buckets ALTER COLUMN observed_seconds DROP DEFAULT;
UPDATE buckets b SET observed_seconds = c.observed, lines = c.lines, zones = c.zones FROM (
    SELECT site, agent, camera, CAST(EXTRACT(EPOCH FROM bucket_start) AS BIGINT) AS start_s,
        MAX(observed_seconds) AS observed,
        json_agg(json_build_array(rule, class, "in", "out"))
            FILTER (WHERE rule_type = 'line') AS lines,
        json_agg(json_build_array(rule, class, occupancy_mean, occupancy_max, dwell_count,
            dwell_mean, dwell_p90, dwell_max)) FILTER (WHERE rule_type = 'zone') AS zones
    FROM counts GROUP BY 1, 2, 3, 4
) c WHERE b.site = c.site AND b.agent = c.agent AND b.camera = c.camera AND b.start_s = c.start_s;
DROP TABLE counts;
CREATE VIEW counts AS
SELECT b.site, b.agent, b.camera, e->>0 AS rule, 'line' AS rule_type, e->>1 AS class,
    to_timestamp(b.start_s) AS bucket_start, CAST(b.end_s - b.start_s AS INTEGER) AS bucket_seconds,
    b.observed_seconds, CAST(e->>2 AS BIGINT) AS "in", CAST(e->>3 AS BIGINT) AS "out",
    CAST(NULL AS DOUBLE PRECISION) AS occupancy_mean, CAST(NULL AS BIGINT) AS occupancy_max,
    CAST(NULL AS BIGINT) AS dwell_count, CAST(NULL AS DOUBLE PRECISION) AS dwell_mean,
    CAST(NULL AS DOUBLE PRECISION) AS dwell_p90, CAST(NULL AS DOUBLE PRECISION) AS dwell_max
FROM buckets b CROSS JOIN LATERAL json_array_elements(b.lines) e
UNION ALL
SELECT b.site, b.agent, b.camera, e->>0, 'zone', e->>1, to_timestamp(b.start_s),
    CAST(b.end_s - b.start_s AS INTEGER), b.observed_seconds, NULL, NULL,
    CAST(e->>2 AS DOUBLE PRECISION), CAST(e->>3 AS BIGINT), CAST(e->>4 AS BIGINT),
    CAST(e->>5 AS DOUBLE PRECISION), CAST(e->>6 AS DOUBLE PRECISION),
    CAST(e->>7 AS DOUBLE PRECISION)
FROM buckets b CROSS JOIN LATERAL json_array_elements(b.zones) e
UNION ALL
SELECT site, agent, camera, '', 'none', '', to_timestamp(start_s),
    CAST(end_s - start_s AS INTEGER), observed_seconds, NULL, NULL, NULL, NULL, NULL, NULL,
    NULL, NULL
FROM buckets WHERE lines IS NULL AND zones IS NULL;
"""
# The schema's history, oldest first: a change is a new Migration; a shipped one never changes.
MIGRATIONS = (
    Migration(1, _SCHEMA_V1),
    Migration(2, _SCHEMA_V2),
    Migration(3, _SCHEMA_V3),
    Migration(4, _SCHEMA_V4),
    Migration(5, _SCHEMA_V5),
    Migration(6, _SCHEMA_V6),
    Migration(7, _SCHEMA_V7),
    Migration(8, _SCHEMA_V8),
)
