"""The server a benchmark runs on: its URL, its other databases, its version.

Standard library only at import time, like measure.py.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    import psycopg


def server_url(database: str | None) -> str:
    """The server to benchmark: `database`, else $FLOWLEDGER_URL or $DATABASE_URL, else the
    embedded server (started when it is not running)."""
    from flowledger.urls import resolve

    resolved = resolve(database, source="--database")
    if resolved is not None:
        return resolved.url
    from flowledger.tools.devserver import EmbeddedServer

    return EmbeddedServer().ensure_running()


def with_db(url: str, dbname: str) -> str:
    """The URL of another database on the same server."""
    return urlunsplit(urlsplit(url)._replace(path="/" + dbname))


def server_version(conn: psycopg.Connection[Any]) -> str:
    """`PostgreSQL 18.6` for the server `conn` is connected to."""
    row = conn.execute("SELECT version()").fetchone()
    return str(row[0] if row else "?").split(" on ")[0]


def recreate_database(admin: psycopg.Connection[Any], name: str) -> None:
    """Drop the database `name` (its sessions too) and create it empty, through `admin`."""
    admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin.execute(f"CREATE DATABASE {name}")


def migrated_database(database: str | None, name: str) -> tuple[str, str]:
    """A fresh, fully migrated database `name` on the server of `database` (None: the
    embedded one): its libpq URL, and the server's version."""
    import psycopg

    from flowledger.tools.migrate import Migrator
    from flowledger.urls import to_libpq_url

    base = to_libpq_url(server_url(database))
    with psycopg.connect(with_db(base, "postgres"), autocommit=True) as admin:
        server = server_version(admin)
        recreate_database(admin, name)
    url = with_db(base, name)
    with Migrator(url) as migrator:
        migrator.apply()
    return url, server


def wait_for_autovacuum(conn: psycopg.Connection[Any], limit: float = 120.0) -> None:
    """Wait until no autovacuum worker runs on the server: one cleaning up after the
    previous measured run would otherwise compete with the next (on this machine it
    halved some drains)."""
    deadline = time.monotonic() + limit
    while conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'"
    ).fetchone() != (0,):
        if time.monotonic() > deadline:
            raise AssertionError(f"autovacuum still running after {limit:.0f} s")
        time.sleep(0.2)
