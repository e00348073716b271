"""The connections every workload measures through, opened once per run."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg
import msgspec
import psycopg
import sqlalchemy as sa
from psycopg.types.json import set_json_dumps, set_json_loads

import flowledger
from flowledger.database import Database
from flowledger.urls import to_libpq_url, to_yoyo_url


@dataclass
class Context:
    """One connection per contender (flowledger's pool, psycopg, asyncpg, SQLAlchemy), on
    the benchmark database at `url`, and a sample of execution ids to look up."""

    url: str
    repeats: int
    db: Database
    psy: psycopg.Connection[Any]
    loop: asyncio.AbstractEventLoop
    apg: asyncpg.Connection
    apg_copy: asyncpg.Connection  # binary jsonb codec: COPY requires it
    engine: sa.Engine
    ids: list[uuid.UUID]

    def close(self) -> None:
        """Close every connection `open_context` opened."""
        self.loop.run_until_complete(self.apg.close())
        self.loop.run_until_complete(self.apg_copy.close())
        self.loop.close()
        self.psy.close()
        self.engine.dispose()
        self.db.close()


def open_context(url: str, repeats: int) -> Context:
    """The connections of every contender on `url`; close them with `Context.close`."""
    db = flowledger.connect(url, min_size=1, max_size=4)
    psy = tuned_psycopg(url)
    loop = asyncio.new_event_loop()
    apg = loop.run_until_complete(asyncpg_connect(url))
    apg_copy = loop.run_until_complete(asyncpg_connect(url, binary_json=True))
    engine = sa_engine(url)
    rows = psy.execute(
        "SELECT id FROM workflow_executions TABLESAMPLE SYSTEM (5) LIMIT 2000"
    ).fetchall()
    ids = [r[0] for r in rows]
    return Context(url, repeats, db, psy, loop, apg, apg_copy, engine, ids)


def tuned_psycopg(url: str) -> psycopg.Connection[Any]:
    """psycopg with the settings that measured fastest (PERF-NOTES)."""
    conn = psycopg.connect(url, autocommit=True, options="-c TimeZone=UTC")
    set_json_loads(msgspec.json.decode, conn)
    set_json_dumps(msgspec.json.encode, conn)
    return conn


def _asyncpg_dsn(url: str) -> dict[str, Any]:
    info = psycopg.conninfo.conninfo_to_dict(to_libpq_url(url))
    return {
        "host": info.get("host"),
        "port": int(info.get("port") or 5432),
        "user": info.get("user"),
        "password": info.get("password"),
        "database": info.get("dbname"),
        "server_settings": {"TimeZone": "UTC"},
    }


async def asyncpg_connect(url: str, *, binary_json: bool = False) -> asyncpg.Connection:
    """asyncpg with jsonb through msgspec: text codec (fastest reads: the builtin decoder
    is called directly) or binary codec (COPY requires binary)."""
    conn = await asyncpg.connect(**_asyncpg_dsn(url))
    if binary_json:
        await conn.set_type_codec(
            "jsonb",
            encoder=lambda v: b"\x01" + msgspec.json.encode(v),
            decoder=lambda b: msgspec.json.decode(b[1:]),
            schema="pg_catalog",
            format="binary",
        )
        return conn
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda v: msgspec.json.encode(v).decode(),
        format="text",
        decoder=msgspec.json.decode,
        schema="pg_catalog",
    )
    return conn


def sa_engine(url: str) -> sa.Engine:
    """A SQLAlchemy 2 engine on psycopg 3, pool of 2, sessions in UTC."""
    sa_url = to_yoyo_url(url).replace("postgresql://", "postgresql+psycopg://", 1)
    return sa.create_engine(sa_url, connect_args={"options": "-c TimeZone=UTC"}, pool_size=2)
