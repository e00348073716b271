"""A FastAPI service on flowledger; serve `example_app:app` with FLOWLEDGER_URL set."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Depends, FastAPI, Request, Response
from pydantic import BaseModel

import flowledger
from flowledger.records.identity import NewUser

log = logging.getLogger("example_app")

# What each flowledger error means to a client; any other error is a 500, whose message
# goes to the log, not to the client.
STATUS: dict[type[flowledger.FlowledgerError], int] = {
    flowledger.NotFound: 404,
    flowledger.Conflict: 409,
    flowledger.StaleWrite: 409,
    flowledger.InvalidInput: 422,
    flowledger.Unavailable: 503,
    flowledger.Retryable: 503,
}


class UserIn(BaseModel):
    """What POST /users takes."""

    email: str
    display_name: str


def as_json(value: Any, status_code: int = 200) -> Response:
    """A JSON response of flowledger records (msgspec structs), lists and dicts."""
    return Response(msgspec.json.encode(value), status_code, media_type="application/json")


def database(request: Request) -> flowledger.AsyncDatabase:
    """The app's database, opened by its lifespan."""
    db: flowledger.AsyncDatabase = request.app.state.db
    return db


async def transaction(
    db: Annotated[flowledger.AsyncDatabase, Depends(database)],
) -> AsyncIterator[flowledger.AsyncTransaction]:
    """One transaction per request: the handler's exception is thrown in here, so the
    block rolls back whatever the request wrote; a handler that returns commits."""
    async with db.transaction() as tx:
        yield tx


Db = Annotated[flowledger.AsyncDatabase, Depends(database)]
# scope="function": commit once the handler returned, before the response is sent, so a
# client never reads 201 for a write whose commit failed.
Tx = Annotated[flowledger.AsyncTransaction, Depends(transaction, scope="function")]

router = APIRouter()


@router.get("/ready")
async def ready(db: Db) -> Response:
    health = await db.health(timeout=1.0)
    return as_json(health, 200 if health["postgres"] == "ok" else 503)


@router.post("/users")
async def create_user(body: UserIn, tx: Tx) -> Response:
    user = await tx.users.create(user=NewUser(**body.model_dump()))
    return as_json(user, 201)


@router.post("/users/batch")
async def create_users(body: list[UserIn], tx: Tx) -> Response:
    """All the users or none: a taken or invalid email rolls back the ones before it."""
    users = [await tx.users.create(user=NewUser(**u.model_dump())) for u in body]
    return as_json(users, 201)


@router.get("/users/{user_id}")
async def get_user(user_id: str, tx: Tx) -> Response:
    return as_json(await tx.users.get(id=user_id))


async def flowledger_error(request: Request, exc: Exception) -> Response:
    status = next((code for cls, code in STATUS.items() if isinstance(exc, cls)), 500)
    if status != 500:
        return as_json({"detail": str(exc)}, status)
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return as_json({"detail": "internal error"}, 500)


def create_app(url: str | None = None, **settings: Any) -> FastAPI:
    """The service on `url` (else FLOWLEDGER_URL, else DATABASE_URL)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.db = await flowledger.connect_async(url, **settings)
        try:
            yield
        finally:
            await app.state.db.close()

    app = FastAPI(lifespan=lifespan)
    app.add_exception_handler(flowledger.FlowledgerError, flowledger_error)
    app.include_router(router)
    return app


app = create_app()
