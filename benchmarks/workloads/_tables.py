"""The two tables the peers touch: their columns in record order and an ORM mapping of them."""

from __future__ import annotations

import datetime
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm
from sqlalchemy.dialects import postgresql as pg

# In the order of flowledger.records.runs.Execution, so that `Execution(*row)` decodes a row.
COLUMNS = (
    "id, workflow_id, workflow_version, parent_execution_id, triggered_by, status, attempt,"
    " idempotency_key, parameters, variables, task_graph, error_message, pause_reason,"
    " started_at, finished_at, row_version, created_at, updated_at, failure_mode, parent_step_id"
)
LOG_COLUMNS = ("step_id", "execution_id", "level", "message", "fields", "logged_at")


class Base(orm.DeclarativeBase):
    pass


class ExecutionRow(Base):
    __tablename__ = "workflow_executions"
    id: orm.Mapped[uuid.UUID] = orm.mapped_column(primary_key=True)
    workflow_id: orm.Mapped[uuid.UUID]
    workflow_version: orm.Mapped[int]
    parent_execution_id: orm.Mapped[uuid.UUID | None]
    triggered_by: orm.Mapped[uuid.UUID | None]
    status: orm.Mapped[str]
    attempt: orm.Mapped[int]
    idempotency_key: orm.Mapped[str | None]
    parameters: orm.Mapped[dict[str, Any]] = orm.mapped_column(pg.JSONB)
    variables: orm.Mapped[dict[str, Any]] = orm.mapped_column(pg.JSONB)
    task_graph: orm.Mapped[dict[str, Any]] = orm.mapped_column(pg.JSONB)
    error_message: orm.Mapped[str | None]
    pause_reason: orm.Mapped[str | None]
    started_at: orm.Mapped[datetime.datetime | None] = orm.mapped_column(sa.DateTime(timezone=True))
    finished_at: orm.Mapped[datetime.datetime | None] = orm.mapped_column(
        sa.DateTime(timezone=True)
    )
    row_version: orm.Mapped[int]
    created_at: orm.Mapped[datetime.datetime] = orm.mapped_column(sa.DateTime(timezone=True))
    updated_at: orm.Mapped[datetime.datetime] = orm.mapped_column(sa.DateTime(timezone=True))
    failure_mode: orm.Mapped[str]
    parent_step_id: orm.Mapped[uuid.UUID | None]


class LogRow(Base):
    __tablename__ = "step_logs"
    id: orm.Mapped[int] = orm.mapped_column(sa.BigInteger, primary_key=True)
    step_id: orm.Mapped[uuid.UUID]
    execution_id: orm.Mapped[uuid.UUID]
    level: orm.Mapped[str]
    message: orm.Mapped[str]
    fields: orm.Mapped[dict[str, Any]] = orm.mapped_column(pg.JSONB)
    logged_at: orm.Mapped[datetime.datetime] = orm.mapped_column(sa.DateTime(timezone=True))


EXECUTIONS = ExecutionRow.__table__
