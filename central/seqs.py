"""Per-agent seq bookkeeping in ranges: which seqs central has accounted for (received, merged
or declared lost) and the gaps below the highest one, so that what a message claims costs
time and rows in proportion to its ranges, never to the number of seqs they span. Each agent
epoch (a reinstalled agent's seqs start again at 0) has a bookkeeping of its own."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

Range = tuple[int, int]  # [first, last], both included
Key = tuple[str, str, str]  # site, agent, epoch
Anchor = tuple[int, float | None]  # highest seq sent so far, when last heard from


def coalesce(ranges: Iterable[Range]) -> list[Range]:
    """Sorted, disjoint, non-adjacent ranges covering exactly the seqs of `ranges`."""
    out: list[Range] = []
    for a, b in sorted(ranges):
        if out and a <= out[-1][1] + 1:
            if b > out[-1][1]:
                out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out


def subtract(ranges: list[Range], minus: list[Range]) -> list[Range]:
    """The seqs of `ranges` not in `minus` (both sorted and disjoint), as sorted ranges."""
    out: list[Range] = []
    j = 0
    for a, b in ranges:
        while j < len(minus) and minus[j][1] < a:
            j += 1
        k = j
        while a <= b and k < len(minus) and minus[k][0] <= b:
            if minus[k][0] > a:
                out.append((a, minus[k][0] - 1))
            a = max(a, minus[k][1] + 1)
            k += 1
        if a <= b:
            out.append((a, b))
    return out


def intersect(ranges: list[Range], other: list[Range]) -> list[Range]:
    """The seqs in both (sorted, disjoint) lists, as sorted ranges."""
    return subtract(ranges, subtract(ranges, other))


def overlaps(ranges: list[Range], windows: list[Range]) -> list[int]:
    """For each of the sorted, disjoint `windows`: how many seqs of the sorted, disjoint
    `ranges` it holds (one sweep over both)."""
    out = []
    j = 0
    for lo, hi in windows:
        while j < len(ranges) and ranges[j][1] < lo:
            j += 1
        k, n = j, 0
        while k < len(ranges) and ranges[k][0] <= hi:
            n += min(ranges[k][1], hi) - max(ranges[k][0], lo) + 1
            k += 1
        out.append(n)
    return out


class Executes(Protocol):
    """What the tracker needs of a database: `?`-parameter statements (either backend)."""

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Any: ...

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None: ...


class SeqTracker:
    """Reads and writes the `seq_ranges`, `gaps`, `epochs.max_seq` and `agents.max_seq` of one
    database.

    Invariants, per agent epoch: its seq_ranges are disjoint and non-adjacent; every seq at or
    below its max_seq that no range covers lies in one of its open gaps (with a `grace`: or in a
    hole that no sweep has found lasting yet); gaps are disjoint.

    With a grace (seconds, 0: none), a hole is not recorded when it opens but by `sweep` once it
    has lasted: several workers store one agent's messages interleaved, so seq N+1 is often
    stored just before N, and a gap row written and closed for each would cost writes per
    message. A hole filled (or declared lost) within the grace leaves no gap.
    """

    def __init__(self, conn: Executes, grace: float = 0.0) -> None:
        self.c = conn
        self.grace = grace
        # The holes the last sweep found and when: recorded if the next one finds them too.
        self._holes: dict[Key, list[Range]] = {}
        self._holes_at = ""

    def account(
        self, site: str, agent: str, epoch: str, seen: list[int], lost: list[Range], now: str
    ) -> None:
        """Account for the seqs that arrived (`seen`: own and merged seqs) and the ranges the
        agent declared lost: fill or close the gaps they fall in, open a gap for each hole above
        the highest seq so far. A seq already accounted for keeps its first account; within one
        call, arrival wins over a declared loss."""
        seen_ranges = coalesce((s, s) for s in seen)
        lost_ranges = subtract(coalesce(lost), seen_ranges)
        claimed = coalesce(seen_ranges + lost_ranges)
        if not claimed:
            return
        prev_max = self.max_seq(site, agent, epoch)
        fresh = self._cover(site, agent, epoch, claimed)
        below = subtract(fresh, [(prev_max + 1, claimed[-1][1])])  # only these can be in gaps
        if below:
            self._fill_gaps(site, agent, epoch, below, intersect(lost_ranges, below), now)
        expected = prev_max + 1
        top = claimed[-1][1]
        if not self.grace:
            holes = subtract([(expected, top)], claimed) if top >= expected else []
            self._record_gaps([((site, agent, epoch), holes)], now)
        if top > prev_max:
            self.c.execute(
                "INSERT INTO epochs (site, agent, epoch, max_seq) VALUES (?, ?, ?, ?) ON "
                "CONFLICT(site, agent, epoch) DO UPDATE SET max_seq = excluded.max_seq",
                (site, agent, epoch, top),
            )
            # The agent's own max_seq is over all its epochs: the base of the seq window.
            self.c.execute(
                "INSERT INTO agents (site, agent, max_seq) VALUES (?, ?, ?) ON CONFLICT(site, "
                "agent) DO UPDATE SET max_seq = CASE WHEN agents.max_seq > excluded.max_seq THEN "
                "agents.max_seq ELSE excluded.max_seq END",
                (site, agent, top),
            )

    def _record_gaps(self, holes: Iterable[tuple[Key, list[Range]]], detected_at: str) -> None:
        self.c.executemany(
            "INSERT INTO gaps (site, agent, epoch, seq_from, seq_to, detected_at, missing) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            [(*key, a, b, detected_at, b - a + 1) for key, ranges in holes for a, b in ranges],
        )

    def unrecorded_holes(self) -> dict[Key, list[Range]]:
        """Per agent epoch: the seqs below its highest accounted one that are neither accounted
        for nor in an open gap (one read of seq_ranges and of the open gaps)."""
        holes: dict[Key, list[Range]] = {}
        for site, agent, epoch, a, b in self.c.execute(
            "SELECT site, agent, epoch, hole_from, hole_to FROM (SELECT site, agent, epoch, "
            "LAG(seq_to, 1, -1) OVER (PARTITION BY site, agent, epoch ORDER BY seq_from) + 1 "
            "AS hole_from, seq_from - 1 AS hole_to FROM seq_ranges) h WHERE hole_from <= hole_to"
        ).fetchall():
            holes.setdefault((site, agent, epoch), []).append((int(a), int(b)))
        if not holes:
            return holes
        recorded: dict[Key, list[Range]] = {}
        for site, agent, epoch, a, b in self.c.execute(
            "SELECT site, agent, epoch, seq_from, seq_to FROM gaps WHERE closed_at IS NULL"
        ).fetchall():
            recorded.setdefault((site, agent, epoch), []).append((int(a), int(b)))
        left = {key: subtract(sorted(r), sorted(recorded.get(key, []))) for key, r in holes.items()}
        return {key: r for key, r in left.items() if r}

    def sweep(self, now: str, lock: Callable[[list[tuple[str, str]]], None]) -> int:
        """Record as open gaps the holes the previous sweep found too (detected then), under
        `lock` of their agents; remember the others for the next sweep. Sweeping every `grace`
        seconds records a hole after it lasted at least that, at most twice that after it
        opened. Returns how many gaps were recorded."""
        holes = self.unrecorded_holes()
        lasting = {k: r for k, v in holes.items() if (r := intersect(v, self._holes.get(k, [])))}
        if lasting:
            lock(sorted({(site, agent) for site, agent, _ in lasting}))
            # Again under the agents' locks: another worker may have filled or recorded some.
            holes = self.unrecorded_holes()
            lasting = {k: r for k, v in lasting.items() if (r := intersect(holes.get(k, []), v))}
            self._record_gaps(sorted(lasting.items()), self._holes_at)
        self._holes = {k: subtract(v, lasting.get(k, [])) for k, v in holes.items()}
        self._holes_at = now
        return sum(len(r) for r in lasting.values())

    def anchors(self, agents: set[tuple[str, str]]) -> dict[tuple[str, str], Anchor]:
        """Per (site, agent): the highest seq the agent has sent so far, of any kind (-1 if
        none), and when it was last heard from (None if never); one query per 400 agents."""
        found: dict[tuple[str, str], Anchor] = dict.fromkeys(agents, (-1, None))
        keys = sorted(agents)
        for i in range(0, len(keys), 400):
            chunk = keys[i : i + 400]
            for site, agent, top, last_seen in self.c.execute(
                "SELECT site, agent, CASE WHEN max_seq > high_water_seq THEN max_seq ELSE "
                "high_water_seq END, last_seen FROM agents WHERE (site, agent) IN "
                f"(VALUES {', '.join(['(?, ?)'] * len(chunk))})",
                [v for key in chunk for v in key],
            ).fetchall():
                found[(site, agent)] = (int(top), last_seen)
        return found

    def max_seq(self, site: str, agent: str, epoch: str) -> int:
        row = self.c.execute(
            "SELECT max_seq FROM epochs WHERE site = ? AND agent = ? AND epoch = ?",
            (site, agent, epoch),
        ).fetchone()
        return -1 if row is None else int(row[0])

    def _cover(self, site: str, agent: str, epoch: str, claimed: list[Range]) -> list[Range]:
        """Add the (sorted, disjoint) `claimed` ranges to the epoch's ranges, merging what they
        touch; return their seqs that were not covered before. One read for all of them: seqs
        spread over several workers arrive interleaved, one range per seq."""
        key = (site, agent, epoch)
        lo, hi = claimed[0][0], claimed[-1][1]
        touching = [
            (int(f), int(t))
            for f, t in self.c.execute(
                "SELECT seq_from, seq_to FROM seq_ranges WHERE site = ? AND agent = ? AND "
                "epoch = ? AND seq_from <= ? AND seq_from >= COALESCE((SELECT MAX(seq_from) "
                "FROM seq_ranges WHERE site = ? AND agent = ? AND epoch = ? AND seq_from <= ?), "
                "?) ORDER BY seq_from",
                (*key, hi + 1, *key, lo - 1, lo - 1),
            )
            if t >= lo - 1
        ]
        fresh = subtract(claimed, touching)
        if not fresh:
            return []
        merged = coalesce([*claimed, *touching])
        kept = set(merged) & set(touching)
        self.c.executemany(
            "DELETE FROM seq_ranges WHERE site = ? AND agent = ? AND epoch = ? AND seq_from = ?",
            [(*key, f) for f, t in touching if (f, t) not in kept],
        )
        self.c.executemany(
            "INSERT INTO seq_ranges (site, agent, epoch, seq_from, seq_to) VALUES (?, ?, ?, ?, ?)",
            [(*key, f, t) for f, t in merged if (f, t) not in kept],
        )
        return fresh

    def _fill_gaps(
        self, site: str, agent: str, epoch: str, fresh: list[Range], lost: list[Range], now: str
    ) -> None:
        """Shrink the open gaps that newly accounted seqs below the old maximum fall in (each
        such seq lies in exactly one), closing those left with nothing missing."""
        key = (site, agent, epoch)
        lo, hi = fresh[0][0], fresh[-1][1]
        gaps = self.c.execute(
            "SELECT seq_from, seq_to FROM gaps WHERE site = ? AND agent = ? AND epoch = ? "
            "AND closed_at IS NULL AND seq_from <= ? AND seq_to >= ? AND seq_from >= "
            "COALESCE((SELECT MAX(seq_from) FROM gaps WHERE site = ? AND agent = ? AND "
            "epoch = ? AND seq_from <= ?), ?) ORDER BY seq_from",
            (*key, hi, lo, *key, lo, lo),
        ).fetchall()
        windows: list[tuple[int, int, int]] = []  # (lo, hi, seq_from of the gap)
        j = 0
        for a, b in fresh:
            while j < len(gaps) and gaps[j][1] < a:
                j += 1
            k = j
            while k < len(gaps) and gaps[k][0] <= b:
                windows.append((max(a, gaps[k][0]), min(b, gaps[k][1]), gaps[k][0]))
                k += 1
        lost_in = overlaps(lost, [(w_lo, w_hi) for w_lo, w_hi, _ in windows])
        self.c.executemany(
            "UPDATE gaps SET missing = missing - ?, lost = lost + ?, closed_at = CASE WHEN "
            "missing - ? <= 0 THEN ? END WHERE site = ? AND agent = ? AND epoch = ? AND "
            "seq_from = ?",
            [
                (w_hi - w_lo + 1, lost_n, w_hi - w_lo + 1, now, *key, seq_from)
                for (w_lo, w_hi, seq_from), lost_n in zip(windows, lost_in, strict=True)
            ],
        )

    def received_ranges(
        self, site: str, agent: str, epoch: str, limit: int
    ) -> tuple[int, list[Range]]:
        """What an ack tells the agent: the highest seq up to which every seq of the epoch is
        accounted for (-1 if seq 0 is not), and at most `limit` accounted ranges above it."""
        rows = self.c.execute(
            "SELECT seq_from, seq_to FROM seq_ranges WHERE site = ? AND agent = ? AND epoch = ? "
            "ORDER BY seq_from LIMIT ?",
            (site, agent, epoch, limit + 1),
        ).fetchall()
        ranges = [(int(a), int(b)) for a, b in rows]
        if ranges and ranges[0][0] == 0:
            return ranges[0][1], ranges[1:]
        return -1, ranges[:limit]
