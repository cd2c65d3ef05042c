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


# -- the OpenAPI document says what the errors look like ---------------------------------------

#: Every error body, as the handlers above write it (RFC 9457).
PROBLEM_SCHEMAS: dict[str, Any] = {
    "Problem": {
        "title": "Problem",
        "description": "An error, as RFC 9457 problem details (media type "
        "application/problem+json). Some problems add members of their own: a refused "
        "disclosure carries `decision_id` and `reasons`.",
        "type": "object",
        "properties": {
            "type": {"type": "string", "example": "about:blank"},
            "title": {"type": "string", "example": "The request is not valid"},
            "status": {"type": "integer", "example": 422},
            "detail": {"type": "string", "example": "Check these fields: children[0].nhs_number"},
            "errors": {
                "type": "array",
                "description": "With 422: one item per field that breaks a rule",
                "items": {"$ref": "#/components/schemas/FieldProblem"},
            },
        },
        "required": ["type", "title", "status", "detail"],
    },
    "FieldProblem": {
        "title": "FieldProblem",
        "type": "object",
        "properties": {
            "field": {"type": "string", "example": "children[0].nhs_number"},
            "message": {"type": "string", "example": "is not a valid NHS number"},
            "type": {"type": "string", "example": "value_error"},
        },
        "required": ["field", "message"],
    },
}
_PROBLEM_CONTENT = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}
_SECURED = {
    "401": "No valid bearer token: none, expired, not yet valid, for another audience or issuer, "
    "or signed by a key its issuer does not publish (`WWW-Authenticate` says which)",
    "429": "This client sent more requests a second than its limit; retry after `Retry-After` "
    "seconds",
}
_SCOPED = {"403": "The token does not carry a scope this operation needs"}
_WITH_BODY = {"413": "The request body is larger than the service accepts"}
_ALWAYS = {
    "503": "The service's database, or a service it depends on, cannot be reached just now; "
    "nothing was changed; retry after `Retry-After` seconds",
}
_VALIDATION = (
    "The request is not valid: `errors` names each field and the rule it breaks; nothing was stored"
)


def document_problems(
    schema: dict[str, Any], secured: set[tuple[str, str]], scoped: set[tuple[str, str]]
) -> None:
    """Describe every operation's error responses as problem details in ``schema`` (in place):
    the 401/429 of a bearer-token operation (``secured``: (path, method) pairs), the 403 of one
    that needs a scope, 413 where a body is sent, 503 on every ``/v1`` operation, and FastAPI's
    own 422 (whose default schema is not what the validation handler writes) replaced by the
    real one."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    components.update(PROBLEM_SCHEMAS)
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            responses: dict[str, Any] = operation.setdefault("responses", {})
            if "422" in responses:
                responses["422"] = {"description": _VALIDATION}
            added = dict(_ALWAYS) if path.startswith("/v1/") else {}
            if (path, method) in secured:
                added |= _SECURED
            if (path, method) in scoped:
                added |= _SCOPED
            if "requestBody" in operation:
                added |= _WITH_BODY
            for status, description in added.items():
                responses.setdefault(status, {"description": description})
            for status, response in responses.items():
                if status[:1] in {"4", "5"}:
                    response["content"] = _PROBLEM_CONTENT
