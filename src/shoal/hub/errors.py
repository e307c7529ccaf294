"""The one place where errors become HTTP responses.

Every error body has the same shape (version 1 of the wire format)::

    {"error": {"code": "not_found", "title": "not found", "message": "...", "hint": "..."}}

``code`` is the snake_case name of the ``ShoalError`` class without its
``Error`` suffix (``CorruptChunkError`` -> ``corrupt_chunk``), so a client
maps it back to the same class. Another tenant's object is a plain
``not_found``, the same as one that does not exist.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

from shoal import errors

if TYPE_CHECKING:  # the web stack loads only where responses are made, not for every CLI command
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

log = logging.getLogger("shoal.hub")


class ForbiddenError(errors.AuthError):
    """Authenticated, but the token lacks the scope or the tenant lacks the right."""

    title = "forbidden"


class PayloadTooLargeError(errors.UsageError):
    title = "request too large"


class RangeNotSatisfiableError(errors.UsageError):
    """A Range outside the file; the response carries ``Content-Range: bytes */SIZE``."""

    title = "range not satisfiable"

    def __init__(self, message: str, size: int) -> None:
        super().__init__(message, hint=f"the file is {size} bytes long")
        self.size = size


STATUS_FOR: dict[type[errors.ShoalError], int] = {
    errors.ShoalError: 500,
    errors.UsageError: 400,
    errors.UnsafePathError: 400,
    errors.FormatError: 400,
    errors.IntegrityError: 422,
    errors.NotFoundError: 404,
    errors.AuthError: 401,
    ForbiddenError: 403,
    errors.ConflictError: 409,
    errors.LockedError: 423,
    errors.QuotaExceededError: 507,  # Insufficient Storage: told apart from a body that is too large
    PayloadTooLargeError: 413,
    RangeNotSatisfiableError: 416,
    errors.CursorExpiredError: 410,
    errors.RateLimitedError: 429,
    errors.PausedError: 409,
    errors.PartialFailureError: 207,
    errors.StorageError: 503,
    errors.NetworkError: 502,
}

_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


def error_code(cls: type[errors.ShoalError]) -> str:
    name = cls.__name__.removesuffix("Error") or "shoal"
    return _CAMEL.sub("_", name).lower()


def status_for(exc: errors.ShoalError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS_FOR:
            return STATUS_FOR[cls]
    return 500


def error_body(code: str, title: str, message: str, hint: str | None = None) -> dict[str, object]:
    return {"error": {"code": code, "title": title, "message": message, "hint": hint}}


def error_response(exc: errors.ShoalError) -> JSONResponse:
    from fastapi.responses import JSONResponse  # noqa: PLC0415

    status = status_for(exc)
    headers: dict[str, str] = {}
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="shoal"'
    if isinstance(exc, errors.RateLimitedError):
        headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    if isinstance(exc, RangeNotSatisfiableError):
        headers["Content-Range"] = f"bytes */{exc.size}"
    body = error_body(error_code(type(exc)), exc.title, exc.message, exc.hint)
    return JSONResponse(body, status_code=status, headers=headers)


_HTTP_CODES = {
    400: "usage",
    401: "auth",
    403: "forbidden",
    404: "not_found",
    405: "usage",
    413: "payload_too_large",
}


def install_error_handlers(app: FastAPI) -> None:
    from fastapi import Request  # noqa: PLC0415
    from fastapi.exceptions import RequestValidationError  # noqa: PLC0415
    from fastapi.responses import JSONResponse  # noqa: PLC0415
    from starlette.exceptions import HTTPException as StarletteHTTPException  # noqa: PLC0415

    async def on_shoal_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, errors.ShoalError)
        if status_for(exc) >= 500:
            log.error("request failed: %s: %s", exc.title, exc.message)
        return error_response(exc)

    async def on_validation_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        problems = []
        for item in exc.errors()[:10]:
            where = ".".join(str(p) for p in item.get("loc", ()) if p != "body")
            problems.append(f"{where}: {item.get('msg', 'invalid')}" if where else str(item.get("msg")))
        body = error_body("usage", "invalid request", "; ".join(problems) or "the request is invalid")
        return JSONResponse(body, status_code=400)

    async def on_http_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = _HTTP_CODES.get(exc.status_code, "usage" if exc.status_code < 500 else "shoal")
        body = error_body(code, code.replace("_", " "), str(exc.detail))
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

    async def on_unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error", exc_info=exc)
        body = error_body("shoal", "internal error", "the hub failed unexpectedly; see its log")
        return JSONResponse(body, status_code=500)

    app.add_exception_handler(errors.ShoalError, on_shoal_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)
