"""The async face of flowledger, and the one source of both faces.

`flowledger.connect_async()` returns an `AsyncDatabase` with every repository and method
of `Database`: the same names, arguments, records and errors, awaited. The sync modules
(`flowledger.database`, `flowledger.wakeups`, `flowledger.repositories.*`) are generated
from the modules of this package by .ci/async_to_sync.py.
"""

from __future__ import annotations
