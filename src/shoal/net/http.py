"""``HubSession``: the one HTTP connection of a device to its hub.

It adds the bearer token, refreshes it when it expires (rotating refresh
tokens: the new pair is handed to ``on_tokens`` so the caller persists it
before anything else happens), and translates every failure into the
``ShoalError`` tree once:

    connection refused, timeout, TLS ...   NetworkError (names the hub URL)
    401                                    AuthError
    403                                    AuthError (code "forbidden")
    404                                    NotFoundError
    429                                    RateLimitedError (retry_after from Retry-After)
    other 4xx/5xx                          the class named by the body's error code

Error bodies are ``{"error": {"code", "title", "message", "hint"}}``; ``code``
is the snake_case name of the error class without ``Error``.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractContextManager, asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any, Protocol

import httpx

from shoal import errors

API_PREFIX = "/api/v1"
REFRESH_PATH = API_PREFIX + "/auth/refresh"
_REFRESH_SKEW = 30.0  # refresh this many seconds before the access token's expiry
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)


@dataclass(frozen=True, slots=True)
class TokenSet:
    """The credentials a device holds. ``expires_at`` is Unix time of the access token's expiry."""

    access_token: str
    refresh_token: str | None = None
    expires_at: float | None = None

    @classmethod
    def from_response(cls, body: Mapping[str, Any], now: float | None = None) -> TokenSet:
        expires_in = body.get("expires_in")
        start = time.time() if now is None else now
        return cls(
            access_token=str(body["access_token"]),
            refresh_token=body.get("refresh_token"),
            expires_at=start + float(expires_in) if expires_in is not None else None,
        )

    def expiring(self, now: float) -> bool:
        return self.expires_at is not None and self.expires_at - _REFRESH_SKEW <= now


TokenCallback = Callable[[TokenSet | None], None]


class TokenStore(Protocol):
    """Where a device keeps its tokens, shared by every process of the device.

    ``lock`` is an exclusive, blocking, inter-process lock held while a
    refresh reads, exchanges and saves the pair; ``save(None)`` forgets a
    login the hub ended.
    """

    def load(self) -> TokenSet | None: ...

    def save(self, tokens: TokenSet | None) -> None: ...

    def lock(self) -> AbstractContextManager[None]: ...


_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


def _code_of(cls: type[errors.ShoalError]) -> str:
    return _CAMEL.sub("_", cls.__name__.removesuffix("Error") or "shoal").lower()


def _all_error_classes() -> dict[str, type[errors.ShoalError]]:
    found: dict[str, type[errors.ShoalError]] = {}
    pending: list[type[errors.ShoalError]] = [errors.ShoalError]
    while pending:
        cls = pending.pop()
        if cls.__module__ == errors.__name__:
            found[_code_of(cls)] = cls
        pending.extend(cls.__subclasses__())
    return found


ERROR_CLASSES = _all_error_classes()
_BY_STATUS: dict[int, type[errors.ShoalError]] = {
    400: errors.UsageError,
    401: errors.AuthError,
    403: errors.AuthError,
    404: errors.NotFoundError,
    409: errors.ConflictError,
    413: errors.UsageError,
    422: errors.IntegrityError,
    423: errors.LockedError,
    429: errors.RateLimitedError,
}


def error_from_response(response: httpx.Response, hub_url: str) -> errors.ShoalError:
    """The ShoalError a non-2xx hub response stands for."""
    status = response.status_code
    code, message, hint = "", "", None
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        detail = body["error"]
        code = str(detail.get("code") or "")
        message = str(detail.get("message") or "")
        hint = detail.get("hint") or None
    elif isinstance(body, dict) and isinstance(body.get("error"), str):  # RFC 6749 style
        code = "auth" if body["error"] in ("invalid_grant", "access_denied", "expired_token") else "usage"
        message = str(body.get("error_description") or body["error"])
    if not message:
        message = f"the hub at {hub_url} answered {status} {response.reason_phrase}"
    if code == "quota_exceeded" or status == 413:
        cls: type[errors.ShoalError] = ERROR_CLASSES.get(code, errors.UsageError)
    elif code == "forbidden":
        cls = errors.AuthError
    elif code in ERROR_CLASSES:
        cls = ERROR_CLASSES[code]
    elif status >= 500:
        return errors.NetworkError(
            f"the hub at {hub_url} failed: {message}", hint=hint or "see the hub's log"
        )
    else:
        cls = _BY_STATUS.get(status, errors.ShoalError)
    if cls is errors.RateLimitedError:
        retry = response.headers.get("retry-after", "1")
        return errors.RateLimitedError(
            message, retry_after=float(retry) if retry.isdigit() else 1.0, hint=hint
        )
    if cls is errors.PartialFailureError:
        return errors.PartialFailureError(message, failures=[], hint=hint)
    if cls is errors.AuthError and hint is None and status == 401:
        hint = "log in again with `shoal login`"
    return cls(message, hint=hint)


class HubSession:
    """An ``httpx.AsyncClient`` bound to one hub and one login.

    ``tokens`` may be None for the unauthenticated endpoints (device login).
    ``on_tokens`` is called with every rotated pair, and with None when the
    hub refused the refresh token (the login is over).
    """

    def __init__(
        self,
        base_url: str,
        tokens: TokenSet | None = None,
        *,
        on_tokens: TokenCallback | None = None,
        store: TokenStore | None = None,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._tokens = tokens
        self._on_tokens = on_tokens
        self._store = store
        self._refresh_lock = asyncio.Lock()
        self._client = httpx.AsyncClient(base_url=self.base_url, timeout=timeout, transport=transport)
        if transport is None:
            # Imported here: it loads httpcore, which a hub (importing this module for its
            # error classes) never needs, and which costs about 5 MB of resident memory.
            from shoal.net.liveness import cheap_liveness  # noqa: PLC0415

            cheap_liveness(self._client)

    @property
    def tokens(self) -> TokenSet | None:
        return self._tokens

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._tokens.access_token}"} if self._tokens else {}

    def websocket_url(self, path: str) -> str:
        """``ws://`` or ``wss://`` URL of ``path`` on this hub (send ``auth_headers()`` with it)."""
        if self.base_url.startswith("https://"):
            return "wss://" + self.base_url[len("https://") :] + path
        return "ws://" + self.base_url.removeprefix("http://") + path

    async def __aenter__(self) -> HubSession:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._client.aclose()

    # -- requests --------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        content: bytes | None = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        auth: bool = True,
        timeout: httpx.Timeout | float | None = None,
    ) -> httpx.Response:
        """Send a request; return the 2xx response or raise the translated ShoalError."""
        async with self.stream(
            method,
            path,
            json=json,
            content=content,
            params=params,
            headers=headers,
            auth=auth,
            timeout=timeout,
        ) as response:
            try:
                await response.aread()
            except httpx.HTTPError as exc:  # the hub went away between the headers and the body's end
                raise self._network_error(exc) from exc
            return response

    async def get_json(self, path: str, *, params: Mapping[str, Any] | None = None) -> Any:
        return (await self.request("GET", path, params=params)).json()

    async def post_json(self, path: str, body: Any = None, *, auth: bool = True) -> Any:
        response = await self.request("POST", path, json=body, auth=auth)
        return response.json() if response.content else None

    @asynccontextmanager
    async def stream(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        content: bytes | None = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        auth: bool = True,
        timeout: httpx.Timeout | float | None = None,
    ) -> AsyncIterator[httpx.Response]:
        """Like :meth:`request`, but the body is left unread (``response.aiter_bytes()``)."""
        if auth:
            await self._refresh_if_expiring()
        for attempt in (1, 2):
            sent_with = self._tokens
            request = self._client.build_request(
                method,
                path,
                json=json,
                content=content,
                params=params,
                headers={**(self.auth_headers() if auth else {}), **(headers or {})},
                timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
            )
            try:
                response = await self._client.send(request, stream=True)
            except httpx.HTTPError as exc:
                raise self._network_error(exc) from exc
            try:
                if response.status_code == 401 and auth and attempt == 1 and self._can_refresh():
                    await response.aclose()
                    await self.refresh(stale=sent_with)
                    continue
                if response.is_error:
                    try:
                        await response.aread()
                    except httpx.HTTPError as exc:
                        raise self._network_error(exc) from exc
                    raise error_from_response(response, self.base_url)
                yield response
                return
            finally:
                await response.aclose()

    async def raw_request(self, method: str, path: str, *, json: Any = None) -> httpx.Response:
        """An unauthenticated request whose error statuses are left to the caller (OAuth endpoints)."""
        try:
            return await self._client.request(method, path, json=json)
        except httpx.HTTPError as exc:
            raise self._network_error(exc) from exc

    def _network_error(self, exc: httpx.HTTPError) -> errors.NetworkError:
        kind = type(exc).__name__
        return errors.NetworkError(
            f"cannot reach the hub at {self.base_url}: {kind}: {exc}".rstrip(": "),
            hint="check that the hub is running and the URL is right",
        )

    # -- tokens ----------------------------------------------------------------------------

    def _can_refresh(self) -> bool:
        return self._tokens is not None and self._tokens.refresh_token is not None

    async def _refresh_if_expiring(self) -> None:
        if self._tokens is not None and self._tokens.expiring(time.time()) and self._can_refresh():
            await self.refresh(stale=self._tokens)

    async def refresh(self, stale: TokenSet | None = None) -> TokenSet:
        """Exchange the refresh token for a new pair (once, even if many requests need it).

        With a ``store``, the exchange happens under the store's lock and only
        if the stored pair is still the one this session holds: when another
        process (the daemon, a second command) already rotated it, this
        session adopts the stored pair instead of replaying a used refresh
        token, which the hub would punish by revoking the whole login.
        """
        async with self._refresh_lock:
            current = self._tokens
            if current is None or current.refresh_token is None:
                raise errors.AuthError("not logged in", hint="log in with `shoal login --hub URL`")
            if stale is not None and current is not stale:
                return current  # another request already refreshed
            if self._store is None:
                return await self._exchange(current)
            lock = self._store.lock()
            await asyncio.to_thread(lock.__enter__)
            try:
                stored = self._store.load()
                if stored is not None and stored.refresh_token not in (None, current.refresh_token):
                    if not stored.expiring(time.time()):
                        self._tokens = stored
                        return stored
                    current = stored  # newer, but expiring too: continue the chain from it
                return await self._exchange(current)
            finally:
                lock.__exit__(None, None, None)

    async def _exchange(self, current: TokenSet) -> TokenSet:
        assert current.refresh_token is not None
        try:
            response = await self._client.post(REFRESH_PATH, json={"refresh_token": current.refresh_token})
        except httpx.HTTPError as exc:
            raise self._network_error(exc) from exc
        if response.is_error:
            failure = error_from_response(response, self.base_url)
            if isinstance(failure, errors.AuthError):
                self._tokens = None
                self._persist(None)
                raise errors.AuthError(
                    f"the hub ended this login: {failure.message}",
                    hint="log in again with `shoal login`",
                ) from failure
            raise failure
        fresh = TokenSet.from_response(response.json())
        if fresh.refresh_token is None:
            fresh = replace(fresh, refresh_token=current.refresh_token)
        # Persist first: the old refresh token is dead now, and a crash must not lose the new one.
        self._persist(fresh)
        self._tokens = fresh
        return fresh

    def _persist(self, tokens: TokenSet | None) -> None:
        if self._store is not None:
            self._store.save(tokens)
        if self._on_tokens is not None:
            self._on_tokens(tokens)

    def set_tokens(self, tokens: TokenSet | None) -> None:
        self._tokens = tokens
