# Generated from src/flowledger/aio/repositories/signals.py by .ci/async_to_sync.py.
# Do not edit: edit the async source, then run python .ci/async_to_sync.py.
"""Signals: sent to an execution, each consumed exactly once by a step waiting for its name
(`steps.wait_for_signal`), whose next claims carry the payload as `inputs["signal:<name>"]`.

Signals queue: one sent while no step waits for its name is kept, and every later wait for
that name consumes the oldest one left; a second send does not replace the first.
"""

from __future__ import annotations

import builtins
import uuid
from typing import Any

from flowledger.errors import NotFound
from flowledger.records.runs import ExecutionLock, Signal
from flowledger.repositories._checks import as_json, as_signal_name
from flowledger.repositories.base import Repository, as_uuid

__all__ = ["SignalsReader", "SignalsRepository"]


class SignalsReader(Repository):
    """Signals: list an execution's."""

    def list_by_execution(self, *, execution_id: uuid.UUID | str) -> builtins.list[Signal]:
        """The signals sent to an execution, oldest first, consumed or not; raises
        InvalidInput."""
        params = {"execution_id": as_uuid(execution_id, "execution id")}
        found: builtins.list[Signal] = self._fetch("list_signals_by_execution", params)
        return found


class SignalsRepository(SignalsReader):
    """Signals to executions: send, list."""

    def send(self, *, execution_id: uuid.UUID | str, name: str, payload: Any = None) -> Signal:
        """The signal, stored; in the same transaction the step of the execution waiting
        longest for `name` consumes it (`consumed_by`), queued and the workers woken; with
        none waiting it is kept for the next wait. Raises NotFound, InvalidInput."""
        params = {
            "execution_id": as_uuid(execution_id, "execution id"),
            "name": as_signal_name(name, "name"),
            "payload": as_json(payload, "payload"),
        }
        with self._atomic() as conn:
            # The engine's lock order, and what makes a send and a wait run in turn.
            lock: ExecutionLock | None = self._fetch("lock_signal_execution", params, conn=conn)
            if lock is None:
                raise NotFound(f"execution {params['execution_id']} not found")
            sent: Signal = self._fetch("insert_signal", params, conn=conn)
        return sent
