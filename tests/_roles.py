"""Login roles with restricted rights, for tests of what a limited role may do."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql

_roles = itertools.count()


@contextmanager
def restricted_role(url: str, *grants: str) -> Iterator[str]:
    """A login role holding only `grants` ("... TO {role}"; "{db}" is the database of
    `url`); yields its URL and drops the role afterwards."""
    name = f"fl_role_{os.getpid()}_{next(_roles)}"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
        try:
            for grant in grants:
                admin.execute(grant.format(role=name, db=admin.info.dbname).encode())
            yield f"postgresql://{name}@{url.split('@', 1)[1]}"
        finally:
            admin.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))
