"""`db.replica` on a real streaming standby of the test server (tests/_standby.py): every
read method answers as on the primary, no write method exists, verify writes nothing,
read-your-writes through wal_position()/wait_for(), and the lag and outage policy."""

from __future__ import annotations

import uuid

import pytest

from flowledger.database import Database
from flowledger.records.identity import NewUser

pytestmark = pytest.mark.replica


def _user(n: int) -> NewUser:
    return NewUser(email=f"u{n}-{uuid.uuid4().hex[:8]}@example.com", display_name=f"User {n}")


def test_a_write_then_a_read_with_its_position_sees_the_row_every_time(
    replica_db: Database,
) -> None:
    for n in range(200):
        created = replica_db.users.create(user=_user(n))
        position = replica_db.wal_position()
        replica_db.replica.wait_for(position, timeout=10)
        assert replica_db.replica.users.get(id=created.id) == created
