"""Errors as RFC 9457 problem details: domain errors carry their status; validation names fields."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from shared.logging import get_logger

log = get_logger(__name__)
PROBLEM_JSON = "application/problem+json"


class DomainError(Exception):
    """An error the client can act on; rendered with its own status by one handler."""

    status_code = 400
    title = "Bad request"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class NotFound(DomainError):
    status_code = 404
    title = "Not found"


class Conflict(DomainError):
    status_code = 409
    title = "Conflict"


def problem(status: int, title: str, detail: str, **extra: Any) -> JSONResponse:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON)


def field_path(location: tuple[Any, ...] | list[Any]) -> str:
    """``("body", "children", 0, "family_name")`` → ``children[0].family_name``."""
    parts = list(location)
    if parts and parts[0] in {"body", "query", "path", "header"}:
        origin = parts.pop(0)
        if not parts:
            return str(origin)
        if origin != "body":
            parts.insert(0, origin)
    path = ""
    for part in parts:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += ("." if path else "") + str(part)
    return path


def _validation_errors(error: RequestValidationError) -> list[dict[str, str]]:
    found = []
    for item in error.errors():
        kind = str(item.get("type", ""))
        location = tuple(item.get("loc", ()))
        if kind == "json_invalid":
            message = f"the request body is not valid JSON ({item.get('ctx', {}).get('error', '')})"
            found.append({"field": "body", "message": message.replace(" ()", ""), "type": kind})
            continue
        if kind == "extra_forbidden":
            message = "is not a field of this request; check the spelling against the API docs"
        elif kind == "value_error" and "error" in item.get("ctx", {}):
            message = str(item["ctx"]["error"])  # our own rule, without pydantic's prefix
        else:
            message = str(item.get("msg", "is invalid"))
        found.append({"field": field_path(location), "message": message, "type": kind})
    return found


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def _domain(_: Request, error: DomainError) -> JSONResponse:
        return problem(error.status_code, error.title, error.detail, **error.extra)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, error: RequestValidationError) -> JSONResponse:
        errors = _validation_errors(error)
        fields = ", ".join(sorted({e["field"] for e in errors}))
        return problem(
            422,
            "The request is not valid",
            f"Check these fields: {fields}",
            errors=errors,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, error: StarletteHTTPException) -> JSONResponse:
        detail = error.detail if isinstance(error.detail, str) else "request refused"
        response = problem(error.status_code, _title(error.status_code), detail)
        for name, value in (error.headers or {}).items():
            response.headers[name] = value
        return response

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, error: Exception) -> JSONResponse:
        if database_unavailable(error):
            log.warning("http.database_unavailable", error=repr(error))
            response = problem(
                503,
                "Service unavailable",
                "The service's database cannot be reached just now; nothing was changed. "
                "Try again shortly.",
            )
            response.headers["Retry-After"] = "1"
            return response
        log.exception("http.unhandled_error", error=repr(error))
        return problem(500, "Internal error", "The service could not complete the request.")


# PostgreSQL's SQLSTATEs for "not reachable just now": connection exceptions (class 08) and the
# server shutting down or starting up (57P01 admin_shutdown, 57P02 crash_shutdown,
# 57P03 cannot_connect_now).
_UNAVAILABLE_STATES = ("57P01", "57P02", "57P03")


def database_unavailable(error: BaseException) -> bool:
    """Whether ``error`` (or what caused it) says the database is down or restarting, which is
    no fault of the request: a 503 the client may retry, not a 500."""
    seen: BaseException | None = error
    for _ in range(6):
        if seen is None:
            return False
        if getattr(seen, "connection_invalidated", False):  # SQLAlchemy's DBAPIError
            return True
        if isinstance(seen, ConnectionError):  # refused, reset: the server is not listening
            return True
        state = getattr(seen, "sqlstate", None)
        if isinstance(state, str) and (state.startswith("08") or state in _UNAVAILABLE_STATES):
            return True
        if type(seen).__name__ == "ConnectionDoesNotExistError":  # asyncpg, no SQLSTATE
            return True
        seen = getattr(seen, "orig", None) or seen.__cause__ or seen.__context__
    return False


def _title(status: int) -> str:
    return {
        401: "Unauthenticated",
        403: "Forbidden",
        404: "Not found",
        405: "Method not allowed",
        409: "Conflict",
        413: "Request too large",
        415: "Unsupported media type",
        429: "Too many requests",
    }.get(status, "Request refused")
