"""A database that is down or restarting is a 503 the client may retry, never a 500 (found by
`make chaos`: requests during a PostgreSQL restart answered 500 "Internal error")."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.exc import DBAPIError

from shared.errors import install_error_handlers


class CannotConnectNow(Exception):
    """What asyncpg raises while PostgreSQL recovers: SQLSTATE 57P03."""

    sqlstate = "57P03"


def _wrapped(cause: Exception) -> DBAPIError:
    try:
        raise cause
    except Exception as error:
        return DBAPIError("SELECT 1", None, error)


FAILURES: dict[str, Exception] = {
    "refused": ConnectionRefusedError(111, "Connection refused"),
    "starting": _wrapped(CannotConnectNow("the database system is starting up")),
    "bug": ValueError("a bug"),
}


@pytest.fixture
async def client() -> httpx.AsyncClient:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/{failure}")
    async def fail(failure: str) -> None:
        raise FAILURES[failure]

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


@pytest.mark.parametrize("failure", ["refused", "starting"])
async def test_a_database_that_cannot_be_reached_is_a_503_with_retry_after(
    client: httpx.AsyncClient, failure: str
) -> None:
    response = await client.get(f"/{failure}")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert "nothing was changed" in response.json()["detail"]


async def test_any_other_unexpected_error_is_still_a_500(client: httpx.AsyncClient) -> None:
    response = await client.get("/bug")
    assert response.status_code == 500
