"""Central's SQLite schema, version by version (applied by pantau.agent.wire.migrations)."""

from __future__ import annotations

from pantau.agent.wire.migrations import Migration

_SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS messages (
    msg_id TEXT PRIMARY KEY, site TEXT NOT NULL, agent TEXT NOT NULL, camera TEXT,
    kind TEXT NOT NULL, seq INTEGER NOT NULL, created_at TEXT NOT NULL, received_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS counts (
    site TEXT NOT NULL, agent TEXT NOT NULL, camera TEXT NOT NULL, rule TEXT NOT NULL,
    rule_type TEXT NOT NULL, class TEXT NOT NULL, bucket_start TEXT NOT NULL,
    bucket_seconds INTEGER NOT NULL, observed_seconds REAL NOT NULL,
    "in" INTEGER, "out" INTEGER, occupancy_mean REAL, occupancy_max INTEGER,
    dwell_count INTEGER, dwell_mean REAL, dwell_p90 REAL, dwell_max REAL, msg_id TEXT NOT NULL,
    -- Time first: new buckets append at the end of the B-tree, and time ranges need no index.
    PRIMARY KEY (bucket_start, site, agent, camera, rule, class)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS alerts (
    site TEXT NOT NULL, agent TEXT NOT NULL, camera TEXT NOT NULL, alert_id TEXT NOT NULL,
    state TEXT NOT NULL, type TEXT NOT NULL, severity TEXT NOT NULL, started_at TEXT NOT NULL,
    ended_at TEXT, rule TEXT, details TEXT NOT NULL, created_at TEXT NOT NULL,
    msg_id TEXT NOT NULL,
    PRIMARY KEY (site, agent, alert_id, state)
);
CREATE TABLE IF NOT EXISTS health (
    site TEXT NOT NULL, agent TEXT NOT NULL, camera TEXT NOT NULL, created_at TEXT NOT NULL,
    state TEXT NOT NULL, fps_target REAL, fps_effective REAL, frames_read INTEGER,
    frames_analyzed INTEGER, details TEXT, msg_id TEXT PRIMARY KEY
);
CREATE TABLE IF NOT EXISTS agents (
    site TEXT NOT NULL, agent TEXT NOT NULL, status TEXT, status_at TEXT, software TEXT,
    last_seen REAL, last_heartbeat REAL, high_water_seq INTEGER NOT NULL DEFAULT -1,
    max_seq INTEGER NOT NULL DEFAULT -1, outbox_messages INTEGER,
    PRIMARY KEY (site, agent)
);
CREATE TABLE IF NOT EXISTS cameras (
    site TEXT NOT NULL, agent TEXT NOT NULL, camera TEXT NOT NULL, last_seen REAL,
    health TEXT, health_at TEXT,
    PRIMARY KEY (site, agent, camera)
);
CREATE TABLE IF NOT EXISTS agent_seqs (
    site TEXT NOT NULL, agent TEXT NOT NULL, seq INTEGER NOT NULL, how TEXT NOT NULL,
    PRIMARY KEY (site, agent, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS gaps (
    site TEXT NOT NULL, agent TEXT NOT NULL, seq_from INTEGER NOT NULL, seq_to INTEGER NOT NULL,
    detected_at TEXT NOT NULL, closed_at TEXT, missing INTEGER NOT NULL,
    lost INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (site, agent, seq_from)
);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT, received_at TEXT NOT NULL, topic TEXT NOT NULL,
    size INTEGER NOT NULL, payload BLOB, reason TEXT NOT NULL
);
"""
# v2: seqs kept as ranges (v1 kept a row per seq: a message declaring ten million lost seqs
# wrote ten million rows); a row per stored counts bucket, to find conflicts and overlaps; the
# dead-letter retention's index and counter.
_SCHEMA_V2 = """
CREATE TABLE seq_ranges (
    site TEXT NOT NULL, agent TEXT NOT NULL, seq_from INTEGER NOT NULL, seq_to INTEGER NOT NULL,
    PRIMARY KEY (site, agent, seq_from)
) WITHOUT ROWID;
INSERT INTO seq_ranges
    SELECT site, agent, MIN(seq), MAX(seq) FROM (
        SELECT site, agent, seq, seq - ROW_NUMBER() OVER (PARTITION BY site, agent ORDER BY seq)
            AS run
        FROM agent_seqs
    ) GROUP BY site, agent, run;
DROP TABLE agent_seqs;
CREATE TABLE buckets (
    site TEXT NOT NULL, agent TEXT NOT NULL, camera TEXT NOT NULL, start_s INTEGER NOT NULL,
    end_s INTEGER NOT NULL, msg_id TEXT NOT NULL,
    PRIMARY KEY (site, agent, camera, start_s)
) WITHOUT ROWID;
INSERT OR IGNORE INTO buckets
    SELECT site, agent, camera, CAST(strftime('%s', bucket_start) AS INTEGER),
        CAST(strftime('%s', bucket_start) AS INTEGER) + bucket_seconds, MIN(msg_id)
    FROM counts GROUP BY site, agent, camera, bucket_start;
CREATE INDEX dead_letters_received ON dead_letters (received_at);
CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO counters VALUES ('dead_letters_dropped', 0);
"""
# v3: count rows keyed site first (an operator asks for one camera's period, central for one
# camera's neighbouring buckets) and without a msg_id each (the bucket row has it); messages keyed
# (site, msg_id) with an index for their retention; hourly and daily rollups kept with every
# insert; counters so that `status` counts nothing; the time zone each site's daily rollups were
# made in (empty: not yet made, they are built on open).
_SCHEMA_V3 = """
CREATE TABLE counts_v3 (
    site TEXT NOT NULL, agent TEXT NOT NULL, camera TEXT NOT NULL, rule TEXT NOT NULL,
    rule_type TEXT NOT NULL, class TEXT NOT NULL, bucket_start TEXT NOT NULL,
    bucket_seconds INTEGER NOT NULL, observed_seconds REAL NOT NULL,
    "in" INTEGER, "out" INTEGER, occupancy_mean REAL, occupancy_max INTEGER,
    dwell_count INTEGER, dwell_mean REAL, dwell_p90 REAL, dwell_max REAL,
    PRIMARY KEY (site, agent, camera, bucket_start, rule, class)
) WITHOUT ROWID;
INSERT INTO counts_v3 SELECT site, agent, camera, rule, rule_type, class, bucket_start,
    bucket_seconds, observed_seconds, "in", "out", occupancy_mean, occupancy_max, dwell_count,
    dwell_mean, dwell_p90, dwell_max FROM counts;
DROP TABLE counts;
ALTER TABLE counts_v3 RENAME TO counts;
CREATE TABLE messages_v3 (
    site TEXT NOT NULL, msg_id TEXT NOT NULL, agent TEXT NOT NULL, camera TEXT,
    kind TEXT NOT NULL, seq INTEGER NOT NULL, created_at TEXT NOT NULL, received_at TEXT NOT NULL,
    PRIMARY KEY (site, msg_id)
) WITHOUT ROWID;
INSERT INTO messages_v3 SELECT site, msg_id, agent, camera, kind, seq, created_at, received_at
    FROM messages;
DROP TABLE messages;
ALTER TABLE messages_v3 RENAME TO messages;
CREATE INDEX messages_received ON messages (site, received_at);
CREATE INDEX health_created ON health (site, created_at);
CREATE TABLE hourly (
    site TEXT NOT NULL, agent TEXT NOT NULL, camera TEXT NOT NULL, rule TEXT NOT NULL,
    class TEXT NOT NULL, hour_start TEXT NOT NULL, rule_type TEXT NOT NULL,
    "in" INTEGER NOT NULL, "out" INTEGER NOT NULL, entries INTEGER NOT NULL,
    dwell_seconds REAL NOT NULL, occupancy_seconds REAL NOT NULL, observed_seconds REAL NOT NULL,
    rows INTEGER NOT NULL,
    PRIMARY KEY (site, agent, camera, rule, class, hour_start)
) WITHOUT ROWID;
CREATE INDEX hourly_site_time ON hourly (site, hour_start);
INSERT INTO hourly SELECT site, agent, camera, rule, class,
    substr(bucket_start, 1, 13) || ':00:00Z', MIN(rule_type), COALESCE(SUM("in"), 0),
    COALESCE(SUM("out"), 0), COALESCE(SUM(dwell_count), 0),
    COALESCE(SUM(dwell_mean * dwell_count), 0), COALESCE(SUM(occupancy_mean * observed_seconds), 0),
    SUM(observed_seconds), COUNT(*)
    FROM counts GROUP BY site, agent, camera, rule, class, substr(bucket_start, 1, 13);
CREATE TABLE daily (
    site TEXT NOT NULL, agent TEXT NOT NULL, camera TEXT NOT NULL, rule TEXT NOT NULL,
    class TEXT NOT NULL, day TEXT NOT NULL, rule_type TEXT NOT NULL,
    "in" INTEGER NOT NULL, "out" INTEGER NOT NULL, entries INTEGER NOT NULL,
    dwell_seconds REAL NOT NULL, occupancy_seconds REAL NOT NULL, observed_seconds REAL NOT NULL,
    rows INTEGER NOT NULL,
    PRIMARY KEY (site, agent, camera, rule, class, day)
) WITHOUT ROWID;
CREATE INDEX daily_site_day ON daily (site, day);
CREATE TABLE sites (site TEXT PRIMARY KEY, timezone TEXT NOT NULL);
INSERT INTO sites SELECT DISTINCT site, '' FROM hourly;
CREATE TABLE counters_v3 (
    name TEXT NOT NULL, shard INTEGER NOT NULL, value INTEGER NOT NULL,
    PRIMARY KEY (name, shard)
);
INSERT INTO counters_v3 SELECT name, 0, value FROM counters;
DROP TABLE counters;
ALTER TABLE counters_v3 RENAME TO counters;
INSERT INTO counters VALUES ('messages', 0, (SELECT COUNT(*) FROM messages)),
    ('count_rows', 0, (SELECT COUNT(*) FROM counts)),
    ('buckets', 0, (SELECT COUNT(*) FROM buckets));
INSERT INTO counters SELECT 'first_bucket', 0, MIN(start_s) FROM buckets HAVING COUNT(*) > 0;
INSERT INTO counters SELECT 'last_bucket', 0, MAX(start_s) FROM buckets HAVING COUNT(*) > 0;
"""
# v4: agent epochs (a reinstalled agent's seqs start again at 0): seq ranges and gaps are kept
# per epoch, everything stored before under the legacy epoch ''; `epochs` holds each epoch's
# highest stored seq and what its heartbeats said was sent (tail_seq, first said at tail_at), so
# that a tail central never received shows as a gap; `agents.epoch` is the current one.
_SCHEMA_V4 = """
CREATE TABLE seq_ranges_v4 (
    site TEXT NOT NULL, agent TEXT NOT NULL, epoch TEXT NOT NULL, seq_from INTEGER NOT NULL,
    seq_to INTEGER NOT NULL,
    PRIMARY KEY (site, agent, epoch, seq_from)
) WITHOUT ROWID;
INSERT INTO seq_ranges_v4 SELECT site, agent, '', seq_from, seq_to FROM seq_ranges;
DROP TABLE seq_ranges;
ALTER TABLE seq_ranges_v4 RENAME TO seq_ranges;
CREATE TABLE gaps_v4 (
    site TEXT NOT NULL, agent TEXT NOT NULL, epoch TEXT NOT NULL, seq_from INTEGER NOT NULL,
    seq_to INTEGER NOT NULL, detected_at TEXT NOT NULL, closed_at TEXT,
    missing INTEGER NOT NULL, lost INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (site, agent, epoch, seq_from)
);
INSERT INTO gaps_v4 SELECT site, agent, '', seq_from, seq_to, detected_at, closed_at, missing,
    lost FROM gaps;
DROP TABLE gaps;
ALTER TABLE gaps_v4 RENAME TO gaps;
CREATE TABLE epochs (
    site TEXT NOT NULL, agent TEXT NOT NULL, epoch TEXT NOT NULL,
    max_seq INTEGER NOT NULL DEFAULT -1, high_water_seq INTEGER NOT NULL DEFAULT -1,
    tail_seq INTEGER, tail_at REAL,
    PRIMARY KEY (site, agent, epoch)
);
INSERT INTO epochs (site, agent, epoch, max_seq, high_water_seq)
    SELECT site, agent, '', max_seq, high_water_seq FROM agents;
ALTER TABLE agents ADD COLUMN epoch TEXT NOT NULL DEFAULT '';
"""
# v5: the outgoing event log (forwarders and live screens read it; kept for
# retention.events_hours) and the camera registry (location, address, jurisdiction, tags: from
# the agent's status message or central.yaml).
_SCHEMA_V5 = """
CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, recorded_at TEXT NOT NULL,
    kind TEXT NOT NULL, action TEXT NOT NULL, site TEXT NOT NULL, agent TEXT NOT NULL,
    camera TEXT, jurisdiction TEXT, key TEXT NOT NULL UNIQUE, body TEXT NOT NULL
);
CREATE INDEX events_recorded ON events (recorded_at);
ALTER TABLE cameras ADD COLUMN jurisdiction TEXT;
ALTER TABLE cameras ADD COLUMN lat REAL;
ALTER TABLE cameras ADD COLUMN lon REAL;
ALTER TABLE cameras ADD COLUMN address TEXT;
ALTER TABLE cameras ADD COLUMN description TEXT;
ALTER TABLE cameras ADD COLUMN tags TEXT;
"""
# Alert messages stored before v6 (SQLite) / v4 (PostgreSQL) as alert objects, in the SQL both
# speak: one object per agent alert_id, cleared when its cleared message is stored; of several
# open for one condition (a restarted agent raised it anew) only the newest stays open.
MIGRATE_ALERTS = """
INSERT INTO alert_objects (site, agent, camera, source, alert_id, type, severity, rule, state,
    raised_at, updated_at, cleared_at, cleared_by, details)
SELECT r.site, r.agent, r.camera, 'agent', r.alert_id, r.type, r.severity, COALESCE(r.rule, ''),
    CASE WHEN c.alert_id IS NULL THEN 'open' ELSE 'cleared' END, r.started_at,
    COALESCE(c.created_at, r.created_at), COALESCE(c.ended_at, c.created_at),
    CASE WHEN c.alert_id IS NULL THEN NULL ELSE 'agent' END, r.details
FROM alerts r LEFT JOIN alerts c ON c.site = r.site AND c.agent = r.agent
    AND c.alert_id = r.alert_id AND c.state = 'cleared'
WHERE r.state = 'raised' ORDER BY r.started_at, r.created_at;
INSERT INTO alert_objects (site, agent, camera, source, alert_id, type, severity, rule, state,
    raised_at, updated_at, cleared_at, cleared_by, details)
SELECT c.site, c.agent, c.camera, 'agent', c.alert_id, c.type, c.severity, COALESCE(c.rule, ''),
    'cleared', c.started_at, c.created_at, COALESCE(c.ended_at, c.created_at), 'agent', c.details
FROM alerts c WHERE c.state = 'cleared' AND NOT EXISTS (SELECT 1 FROM alerts r WHERE
    r.site = c.site AND r.agent = c.agent AND r.alert_id = c.alert_id AND r.state = 'raised')
ORDER BY c.started_at, c.created_at;
UPDATE alert_objects SET state = 'cleared', cleared_at = updated_at,
    cleared_by = 'central: superseded'
WHERE state = 'open' AND EXISTS (SELECT 1 FROM alert_objects n WHERE n.state = 'open'
    AND n.site = alert_objects.site AND n.agent = alert_objects.agent
    AND n.camera = alert_objects.camera AND n.type = alert_objects.type
    AND n.rule = alert_objects.rule AND n.id > alert_objects.id);
INSERT INTO alert_links (site, agent, alert_id, object, open)
SELECT site, agent, alert_id, id, CASE WHEN state = 'open' THEN 1 ELSE 0 END FROM alert_objects;
CREATE UNIQUE INDEX alert_objects_open ON alert_objects (site, agent, camera, type, rule)
    WHERE state = 'open';
CREATE INDEX alert_objects_raised ON alert_objects (site, raised_at);
-- Joins with cameras (jurisdiction scopes), and one camera's alerts.
CREATE INDEX alert_objects_camera ON alert_objects (site, agent, camera, raised_at);
CREATE INDEX alert_links_object ON alert_links (site, object);
"""
# v6: alert objects, one per condition episode with its life (raised, updated, acknowledged,
# cleared; see pantau.central.alerts): at most one open per (site, agent, camera, type, rule), so
# a restarted agent's re-announced condition updates the open one; `alert_links` ties each agent
# alert_id to its object (open until the agent clears it); `rule_state` holds the count rules'
# hold and clear timers. Stored alert messages become objects (of several open for one
# condition, the restart bug, only the newest stays open).
_SCHEMA_V6 = (
    """
CREATE TABLE alert_objects (
    id INTEGER PRIMARY KEY AUTOINCREMENT, site TEXT NOT NULL, agent TEXT NOT NULL,
    camera TEXT NOT NULL, source TEXT NOT NULL, alert_id TEXT NOT NULL, type TEXT NOT NULL,
    severity TEXT NOT NULL, rule TEXT NOT NULL, state TEXT NOT NULL, raised_at TEXT NOT NULL,
    updated_at TEXT NOT NULL, cleared_at TEXT, cleared_by TEXT, clear_note TEXT,
    acknowledged_at TEXT, acknowledged_by TEXT, ack_note TEXT, details TEXT NOT NULL,
    changes INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE alert_links (
    site TEXT NOT NULL, agent TEXT NOT NULL, alert_id TEXT NOT NULL, object INTEGER NOT NULL,
    open INTEGER NOT NULL,
    PRIMARY KEY (site, agent, alert_id)
);
CREATE TABLE rule_state (
    site TEXT NOT NULL, name TEXT NOT NULL, on_since REAL, off_since REAL,
    PRIMARY KEY (site, name)
);
"""
    + MIGRATE_ALERTS
)
# v7: API tokens (only a SHA-256 of each secret; the name is unique among tokens not revoked)
# and what each camera's agent last said of it in the registry (`reported`) and central.yaml's
# overrides applied (`overrides`), so the registry columns can be recomputed when either changes.
_SCHEMA_V7 = """
CREATE TABLE tokens (
    hash TEXT PRIMARY KEY, name TEXT NOT NULL, role TEXT NOT NULL, scope TEXT NOT NULL,
    created_at TEXT NOT NULL, created_by TEXT, revoked_at TEXT
);
CREATE UNIQUE INDEX tokens_active_name ON tokens (name) WHERE revoked_at IS NULL;
ALTER TABLE cameras ADD COLUMN reported TEXT;
ALTER TABLE cameras ADD COLUMN overrides TEXT;
"""
# v8 (forwarders): each forwarder's durable queue, filled in the transaction that stores the change
# (a copy of the event: the event log keeps only retention.events_hours), its dead letters (what
# the target rejected for good, with its answer) and its delivery state (who holds the delivery
# lease, last success and error).
_SCHEMA_V8 = """
CREATE TABLE forward_queue (
    id INTEGER PRIMARY KEY AUTOINCREMENT, forwarder TEXT NOT NULL, key TEXT NOT NULL,
    kind TEXT NOT NULL, action TEXT NOT NULL, site TEXT NOT NULL, agent TEXT NOT NULL,
    camera TEXT, jurisdiction TEXT, at TEXT NOT NULL, recorded_at TEXT NOT NULL,
    body TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX forward_queue_order ON forward_queue (forwarder, id);
CREATE TABLE forward_dead (
    id INTEGER PRIMARY KEY AUTOINCREMENT, forwarder TEXT NOT NULL, key TEXT NOT NULL,
    kind TEXT NOT NULL, action TEXT NOT NULL, site TEXT NOT NULL, agent TEXT NOT NULL,
    camera TEXT, jurisdiction TEXT, at TEXT NOT NULL, recorded_at TEXT NOT NULL,
    body TEXT NOT NULL, attempts INTEGER NOT NULL, dead_at TEXT NOT NULL, status INTEGER,
    answer TEXT NOT NULL
);
CREATE INDEX forward_dead_order ON forward_dead (forwarder, id);
CREATE TABLE forward_state (
    forwarder TEXT PRIMARY KEY, owner TEXT, lease_until REAL, delivered INTEGER NOT NULL DEFAULT 0,
    last_success_at TEXT, last_error_at TEXT, last_error TEXT, retry_at TEXT
);
"""
# v9: evidence on request: the frames central fetched from an agent for an operator (one row per
# JPEG) and the audit of every request (who asked, when, why, and what came of it).
_SCHEMA_V9 = """
CREATE TABLE evidence (
    id INTEGER PRIMARY KEY AUTOINCREMENT, site TEXT NOT NULL, agent TEXT NOT NULL,
    camera TEXT NOT NULL, alert_id TEXT NOT NULL, idx INTEGER NOT NULL, taken_at TEXT NOT NULL,
    offset_seconds REAL NOT NULL, width INTEGER NOT NULL, height INTEGER NOT NULL,
    stored_at TEXT NOT NULL, jpeg BLOB NOT NULL, sha256 TEXT NOT NULL, size INTEGER NOT NULL,
    UNIQUE (site, agent, alert_id, idx)
);
CREATE TABLE evidence_audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, who TEXT NOT NULL, why TEXT NOT NULL,
    site TEXT NOT NULL, agent TEXT NOT NULL, camera TEXT NOT NULL, alert_id TEXT NOT NULL,
    outcome TEXT NOT NULL, detail TEXT NOT NULL, frames INTEGER NOT NULL
);
CREATE INDEX evidence_audit_alert ON evidence_audit (site, agent, alert_id);
"""
# A REAL as JSON that reads back the same double (json_quote keeps 15 digits only).
_REAL = "CASE WHEN {0} IS NULL THEN 'null' ELSE printf('%!.17g', {0}) END"
_SAME_BUCKET = (
    "c.site = b.site AND c.agent = b.agent AND c.camera = b.camera AND "
    "c.bucket_start = strftime('%Y-%m-%dT%H:%M:%SZ', b.start_s, 'unixepoch')"
)
# The count rows of a bucket as `counts` had them, from its packed row (see storage.packed).
_COUNTS_VIEW = """
CREATE VIEW counts (site, agent, camera, rule, rule_type, class, bucket_start, bucket_seconds,
    observed_seconds, "in", "out", occupancy_mean, occupancy_max, dwell_count, dwell_mean,
    dwell_p90, dwell_max) AS
SELECT b.site, b.agent, b.camera, json_extract(e.value, '$[0]'), 'line',
    json_extract(e.value, '$[1]'), strftime('%Y-%m-%dT%H:%M:%SZ', b.start_s, 'unixepoch'),
    b.end_s - b.start_s, b.observed_seconds, json_extract(e.value, '$[2]'),
    json_extract(e.value, '$[3]'), NULL, NULL, NULL, NULL, NULL, NULL
FROM buckets b, json_each(b.lines) e
UNION ALL
SELECT b.site, b.agent, b.camera, json_extract(e.value, '$[0]'), 'zone',
    json_extract(e.value, '$[1]'), strftime('%Y-%m-%dT%H:%M:%SZ', b.start_s, 'unixepoch'),
    b.end_s - b.start_s, b.observed_seconds, NULL, NULL, json_extract(e.value, '$[2]'),
    json_extract(e.value, '$[3]'), json_extract(e.value, '$[4]'), json_extract(e.value, '$[5]'),
    json_extract(e.value, '$[6]'), json_extract(e.value, '$[7]')
FROM buckets b, json_each(b.zones) e
UNION ALL
SELECT site, agent, camera, '', 'none', '', strftime('%Y-%m-%dT%H:%M:%SZ', start_s, 'unixepoch'),
    end_s - start_s, observed_seconds, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
FROM buckets WHERE lines IS NULL AND zones IS NULL;
"""
# v10: one row per stored counts bucket: its count rows packed into the bucket's row (a row
# per rule and class took most of the database); `counts` is a view that unnests them.
_SCHEMA_V10 = f"""
CREATE TABLE buckets_v10 (
    site TEXT NOT NULL, agent TEXT NOT NULL, camera TEXT NOT NULL, start_s INTEGER NOT NULL,
    end_s INTEGER NOT NULL, msg_id TEXT NOT NULL, observed_seconds REAL NOT NULL,
    lines TEXT, zones TEXT,
    PRIMARY KEY (site, agent, camera, start_s)
) WITHOUT ROWID;
INSERT INTO buckets_v10 SELECT b.site, b.agent, b.camera, b.start_s, b.end_s, b.msg_id,
    COALESCE((SELECT MAX(observed_seconds) FROM counts c WHERE {_SAME_BUCKET}), 0),
    (SELECT '[' || group_concat('[' || json_quote(rule) || ',' || json_quote(class) || ',' ||
        json_quote("in") || ',' || json_quote("out") || ']') || ']'
     FROM counts c WHERE {_SAME_BUCKET} AND rule_type = 'line'),
    (SELECT '[' || group_concat('[' || json_quote(rule) || ',' || json_quote(class) || ',' ||
        {_REAL.format("occupancy_mean")} || ',' || json_quote(occupancy_max) || ',' ||
        json_quote(dwell_count) || ',' || {_REAL.format("dwell_mean")} || ',' ||
        {_REAL.format("dwell_p90")} || ',' || {_REAL.format("dwell_max")} || ']') || ']'
     FROM counts c WHERE {_SAME_BUCKET} AND rule_type = 'zone')
FROM buckets b;
DROP TABLE counts;
DROP TABLE buckets;
ALTER TABLE buckets_v10 RENAME TO buckets;
{_COUNTS_VIEW}
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
    Migration(9, _SCHEMA_V9),
    Migration(10, _SCHEMA_V10),
)
