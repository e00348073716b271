"""RESULTS.md: run.py's sections (figures, ratios, targets, notes) and the marked sections
other scripts write into the same file, which a rewrite by run.py keeps.

A marked section sits between `<!-- section: NAME -->` and `<!-- end: NAME -->`;
orchestration.py writes `orchestration`, by hand `peers`. Standard library only at import
time, like measure.py.
"""

from __future__ import annotations

import datetime
import os
import platform
import re
from collections.abc import Mapping
from pathlib import Path

from measure import ratio

NOTES = """\
## How to read this, and what was tried

- **Point lookups.** The default path borrows a pool connection per call; psycopg_pool's
  `getconn` + `putconn` alone cost ~12.6 µs (measured: a 3-column prepared lookup on a pooled
  connection 17,014/s without a borrow per call, 14,129/s with one). That borrow is the gap
  to the single-connection psycopg loop; `db.pinned()` (one borrow for the whole loop) is
  the like-for-like comparison. Tried and kept: a class-based borrow instead of the
  pool's generator context manager, one reusable cursor per connection (a new cursor per
  call cost ~12 %), no generator context managers on the hot path, json/jsonb decoded by
  msgspec's builtin called straight from psycopg's C row loader (+23 % on pages over
  `set_json_loads(msgspec.json.decode)`, which wraps it in a Python method).
- **Pages.** Every peer driver runs flowledger's own `list_executions` text (optional
  filters NULL); the SQLAlchemy peers run their idiomatic query. A specialised listing
  without the optional filters was tried and dropped: PostgreSQL chose custom plans for
  both forms (2,995 of 2,995 executions each) and 9 interleaved repeats showed no gain.
- **Log append.** The server dominates: COPY into `step_logs` runs two foreign-key checks
  per row; the same 100,000 rows into a copy of the table without the foreign keys went
  3.2x faster (39,132 vs 125,187 rows/s, medians of 3). Those keys are kept: retention
  deletes logs by cascade, and a log line of a missing step is a bug worth refusing.
  `step_logs.append` passes the jsonb dict straight to COPY (set_types fixes the dumper):
  no wrapper object per row.
- **Claims.** Each claim and each completion is a commit; on this machine's disk the fsync
  of a commit dominates, hence the batch-of-10 lever. pgbench runs flowledger's own claim
  and complete statements (same SQL, same transaction shape) as the ceiling.
- The machine drifts by ±25 % (more between runs): compare ratios within one run only.
"""

# (section, ours, peer, wanted ratio ours ÷ peer), checked when the section was measured.
TARGETS = [
    ("point lookup by id", "flowledger", "psycopg (tuned)", 0.95),
    ("point lookup by id", "flowledger, db.pinned()", "psycopg (tuned)", 0.95),
    ("point lookup by id", "flowledger", "SQLAlchemy ORM Session.get", 3.5),
    ("keyset page of 50 records", "flowledger", "asyncpg + msgspec", 1.0),
    (
        "append 100,000 log lines (rows/s)",
        "flowledger step_logs.append",
        "psycopg binary COPY",
        0.95,
    ),
    (
        "append 100,000 log lines (rows/s)",
        "flowledger step_logs.append",
        "SQLAlchemy ORM add_all",
        8.0,
    ),
    ("page at depth 100,000", "flowledger page at depth 100,000", "flowledger first page", 1 / 1.5),
]

Sections = Mapping[str, Mapping[str, float]]


def render(
    results: Sections, *, scale: int, repeats: int, server: str, elapsed: float, command: str
) -> str:
    """run.py's part of RESULTS.md: header, one table per section, targets, notes."""
    lines = _header(scale=scale, repeats=repeats, server=server, elapsed=elapsed, command=command)
    for name, peers in results.items():
        lines += _section(name, peers)
    lines += _targets(results)
    lines.append(NOTES)
    return "\n".join(lines) + "\n"


def _header(*, scale: int, repeats: int, server: str, elapsed: float, command: str) -> list[str]:
    import asyncpg
    import psycopg
    import sqlalchemy as sa

    return [
        "# Benchmark results",
        "",
        f"Command: `{command}`",
        "",
        f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC;"
        f" run took {elapsed / 60:.1f} min",
        f"- server: {server}",
        f"- machine: {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"psycopg {psycopg.__version__}, asyncpg {asyncpg.__version__},"
        f" SQLAlchemy {sa.__version__}",
        f"- data: `flowledger seed --scale {scale}`"
        " (executions; 3 steps, 2 log lines each), ANALYZEd",
        f"- each figure: median of {repeats} interleaved repeats (fewer for the heavy ones); "
        "higher is better except for memory",
        "",
    ]


def _section(name: str, peers: Mapping[str, float]) -> list[str]:
    first = next(iter(peers))
    # Throughput: flowledger ÷ peer. Memory and the claim grid: each row ÷ the first.
    per_first = "MiB" in name or name.startswith("claim")
    head = f"÷ {first}" if per_first else "flowledger ÷ peer"
    unit = "MiB (lower is better)" if "MiB" in name else "per second"
    lines = [f"## {name}", "", f"| peer | {unit} | {head} |", "|---|---:|---:|"]
    base = peers[first]
    for peer, value in peers.items():
        times = ratio(value, base) if per_first else ratio(base, value)
        lines.append(f"| {peer} | {value:,.1f} | {times:.2f}× |")
    lines.append("")
    if name.startswith("claim"):
        lines += [_claim_summary(peers), ""]
    return lines


def _claim_summary(peers: Mapping[str, float]) -> str:
    def fl(workers: int, batch: int) -> float:
        return peers[f"flowledger, {workers} worker(s), batch {batch}"]

    vs_pgbench = [
        f"{w} worker(s) {ratio(fl(w, 1), peers[key]):.2f}×"
        for w in (1, 2, 4)
        if (key := f"pgbench, same SQL, {w} client(s), batch 1") in peers
    ]
    batching = [f"{w} worker(s) {ratio(fl(w, 10), fl(w, 1)):.1f}×" for w in (1, 2, 4)]
    return (
        f"flowledger ÷ pgbench running the same SQL: {', '.join(vs_pgbench)};"
        f" batch 10 ÷ batch 1: {', '.join(batching)}"
    )


def _targets(results: Sections) -> list[str]:
    lines = ["## Targets", "", "| target | measured | met |", "|---|---:|:---:|"]
    for workload, ours, peer, wanted in TARGETS:
        if workload not in results:
            continue
        got = ratio(results[workload][ours], results[workload][peer])
        label = (
            f"{ours} ≥ {wanted:g}× {peer} ({workload})"
            if wanted >= 1 or "depth" not in workload
            else "page at depth 100,000 within 1.5× of the first page"
        )
        lines.append(f"| {label} | {got:.2f}× | {'yes' if got >= wanted else 'NO'} |")
    lines.append("")
    return lines


def kept_sections(old: str) -> str:
    """The marked sections of `old` (a RESULTS.md), to be kept when run.py rewrites it."""
    blocks = re.finditer(r"\n<!-- section: (\w+) -->.*?<!-- end: \1 -->\n", old, flags=re.S)
    return "".join(m.group(0) for m in blocks)


def write_results(path: Path, text: str) -> None:
    """Replace `path` with `text` followed by the marked sections it held."""
    kept = kept_sections(path.read_text() if path.exists() else "")
    path.write_text(text + kept)


def write_section(path: Path, name: str, title: str, body: str) -> None:
    """Put `body` under `title` into the file's `name` section, replacing an earlier one
    (written at the end of the file, which need not exist)."""
    text = path.read_text() if path.exists() else ""
    block = f"\n<!-- section: {name} -->\n## {title}\n\n{body}\n<!-- end: {name} -->\n"
    start, end = f"\n<!-- section: {name} -->", f"<!-- end: {name} -->\n"
    if start in text and end in text:
        text = text[: text.index(start)] + text[text.index(end) + len(end) :]
    path.write_text(text.rstrip("\n") + "\n" + block)
