"""The ``/activate`` page: a person approves a device's login code with their name and password.

Plain HTML, no scripts, works with a keyboard and a screen reader. Guessing
is bounded twice: each wrong password counts against the code (denied after
``user_code_max_attempts``), and each client address may fail only a few
times per window.
"""

from __future__ import annotations

import time
from collections import deque
from html import escape
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from shoal.errors import AuthError, NotFoundError, UsageError
from shoal.hub.auth import accounts, device_flow
from shoal.hub.context import hub_context
from shoal.hub.errors import ForbiddenError

router = APIRouter(include_in_schema=False)

FAILURES_PER_WINDOW = 20
WINDOW_SECONDS = 600.0
_MAX_FORM_BYTES = 8 * 1024
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
}


class FailureLimiter:
    """Counts failures per client address in a sliding window."""

    def __init__(self, limit: int = FAILURES_PER_WINDOW, window: float = WINDOW_SECONDS) -> None:
        self.limit = limit
        self.window = window
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._failures.setdefault(key, deque())
        while times and times[0] < now - self.window:
            times.popleft()
        return times

    def blocked(self, key: str) -> bool:
        return len(self._recent(key, time.monotonic())) >= self.limit

    def fail(self, key: str) -> None:
        now = time.monotonic()
        self._recent(key, now).append(now)
        if len(self._failures) > 10_000:  # forget idle addresses so memory stays bounded
            for stale in [k for k, v in self._failures.items() if not v]:
                del self._failures[stale]


def _limiter(request: Request) -> FailureLimiter:
    limiter = getattr(request.app.state, "activate_limiter", None)
    if limiter is None:
        limiter = request.app.state.activate_limiter = FailureLimiter()
    assert isinstance(limiter, FailureLimiter)
    return limiter


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    html = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)} - shoal</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 30rem; margin: 3rem auto; padding: 0 1rem;
  line-height: 1.5; }}
label {{ display: block; margin-top: 1rem; font-weight: 600; }}
input {{ width: 100%; padding: .5rem; font-size: 1rem; box-sizing: border-box; }}
button {{ margin-top: 1.5rem; padding: .6rem 1.2rem; font-size: 1rem; }}
.error {{ color: #8a1c1c; border-left: 4px solid #8a1c1c; padding-left: .75rem; }}
</style></head>
<body><main><h1>{escape(title)}</h1>
{body}
</main></body></html>"""
    return HTMLResponse(html, status_code=status, headers=_HEADERS)


def _form(code: str = "", user: str = "", error: str | None = None, status: int = 200) -> HTMLResponse:
    alert = f'<p class="error" role="alert">{escape(error)}</p>' if error else ""
    body = f"""{alert}
<p>A device is asking to sign in to this hub. Enter the code it shows, and your user name and password
to approve it. Only approve a code you started yourself.</p>
<form method="post" action="/activate">
<label for="code">Device code</label>
<input id="code" name="code" value="{escape(code)}" required autocomplete="one-time-code"
 autocapitalize="characters" spellcheck="false" aria-describedby="code-help">
<small id="code-help">Eight letters, like BCDF-GHJK.</small>
<label for="user">User name</label>
<input id="user" name="user" value="{escape(user)}" required autocomplete="username">
<label for="password">Password</label>
<input id="password" name="password" type="password" required autocomplete="current-password">
<button type="submit" name="action" value="approve">Approve device</button>
<button type="submit" name="action" value="deny">Deny</button>
</form>"""
    return _page("Approve a device", body, status)


@router.get("/activate", response_class=HTMLResponse)
async def activate_form(code: str = "") -> HTMLResponse:
    return _form(code=code[:20])


@router.post("/activate", response_class=HTMLResponse)
async def activate_submit(request: Request) -> HTMLResponse:
    ctx = hub_context(request)
    limiter = _limiter(request)
    client = request.client.host if request.client else "unknown"
    if limiter.blocked(client):
        return _page("Too many attempts", "<p>Too many failed attempts. Wait a few minutes.</p>", 429)
    raw = await request.body()
    fields = dict(parse_qsl(raw[:_MAX_FORM_BYTES].decode("utf-8", "replace")))
    code = fields.get("code", "").strip()[:20]
    user = fields.get("user", "").strip()[:64]
    password = fields.get("password", "")[:1024]
    action = fields.get("action", "approve")
    try:
        device_name, _tenant = await device_flow.pending_request(ctx.db, code)
    except NotFoundError:
        limiter.fail(client)
        return _form(code, user, "There is no pending login with this code. Check it, or start again.", 404)
    try:
        await accounts.authenticate(ctx.db, user, password)
    except AuthError:
        limiter.fail(client)
        blocked = await device_flow.record_failed_attempt(ctx.db, ctx.settings, code)
        message = "Wrong user name or password."
        if blocked:
            message += " This code is now blocked; start the login on the device again."
        return _form(code, user, message, 401)
    if action == "deny":
        await device_flow.deny(ctx.db, code)
        return _page("Login denied", f"<p>The login of {escape(device_name)} was denied.</p>")
    try:
        approval = await device_flow.approve(ctx.db, code, user)
    except (ForbiddenError, UsageError, NotFoundError) as exc:
        return _form(code, user, exc.message, 403 if isinstance(exc, ForbiddenError) else 400)
    return _page(
        "Device approved",
        f"<p><strong>{escape(approval.device_name)}</strong> is now signed in as "
        f"<strong>{escape(approval.user_name)}</strong> in <strong>{escape(approval.tenant_name)}</strong>."
        " You can close this page.</p>",
    )
