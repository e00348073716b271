"""flowledger: the PostgreSQL persistence layer of a workflow-orchestration platform."""

from __future__ import annotations

__version__ = "0.1.0"
