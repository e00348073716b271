"""Read replicas: what `db.replica.status()` reports about the standby."""

from __future__ import annotations

import msgspec

__all__ = ["ReplicaStatus"]


class ReplicaStatus(msgspec.Struct, frozen=True, gc=False):
    """Where a standby stands: whether it is one, how far behind, what it replayed."""

    # False on a primary, and on a standby once promoted.
    in_recovery: bool
    # 0 when it replayed all the WAL it received while a WAL receiver runs; otherwise the
    # age of the last transaction it replayed; None when it replayed none since it started.
    lag_seconds: float | None
    # The WAL position it replayed up to (pg_lsn text, e.g. '0/3000148'); None on a primary.
    replayed: str | None
