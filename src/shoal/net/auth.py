"""Client side of the hub's auth API: device login (RFC 8628), whoami, devices, logout."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from shoal import errors
from shoal.net.http import API_PREFIX, HubSession, TokenSet, error_from_response
from shoal.net.schemas_auth import (
    DEVICE_CODE_GRANT,
    DeviceCodeRequest,
    DeviceCodeResponse,
    DeviceInfo,
    DeviceList,
    RegisterDeviceRequest,
    WhoAmI,
)

SLOW_DOWN_STEP = 5


class DeviceLoginPending(errors.AuthError):
    """The user has not approved the code yet (``authorization_pending`` or ``slow_down``)."""

    title = "login pending"

    def __init__(self, oauth_error: str, message: str) -> None:
        super().__init__(message)
        self.oauth_error = oauth_error


class AuthClient:
    """Typed calls of the auth endpoints over one :class:`HubSession`."""

    def __init__(self, session: HubSession) -> None:
        self.session = session

    async def start_device_login(
        self, device_name: str, signing_public: bytes, exchange_public: bytes, tenant: str | None = None
    ) -> DeviceCodeResponse:
        body = DeviceCodeRequest(
            device_name=device_name,
            signing_public=signing_public,
            exchange_public=exchange_public,
            tenant=tenant,
        )
        data = await self.session.post_json(API_PREFIX + "/auth/device/code", body.model_dump(), auth=False)
        return DeviceCodeResponse.model_validate(data)

    async def poll_device_token(self, device_code: str) -> TokenSet:
        """One poll: the tokens, :class:`DeviceLoginPending`, or AuthError (denied, expired)."""
        response = await self.session.raw_request(
            "POST",
            API_PREFIX + "/auth/device/token",
            json={"grant_type": DEVICE_CODE_GRANT, "device_code": device_code},
        )
        if response.status_code == 200:
            return TokenSet.from_response(response.json())
        try:
            body = response.json()
        except ValueError:
            body = {}
        code = body.get("error") if isinstance(body, dict) else None
        description = str(body.get("error_description") or code) if isinstance(body, dict) else ""
        if code in ("authorization_pending", "slow_down"):
            raise DeviceLoginPending(code, description)
        if code == "access_denied":
            raise errors.AuthError("the login was denied on the hub", hint="run `shoal login` again")
        if code == "expired_token":
            raise errors.AuthError(
                "the login code expired before it was approved", hint="run `shoal login` again"
            )
        raise error_from_response(response, self.session.base_url)

    async def wait_for_device_token(
        self,
        code: DeviceCodeResponse,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> TokenSet:
        """Poll at the hub's interval (longer after ``slow_down``) until approved, denied or expired."""
        interval = float(code.interval)
        deadline = clock() + code.expires_in
        while True:
            await sleep(interval)
            try:
                return await self.poll_device_token(code.device_code)
            except DeviceLoginPending as pending:
                if pending.oauth_error == "slow_down":
                    interval += SLOW_DOWN_STEP
            if clock() > deadline:
                raise errors.AuthError(
                    "the login code expired before it was approved", hint="run `shoal login` again"
                )

    async def whoami(self) -> WhoAmI:
        return WhoAmI.model_validate(await self.session.get_json(API_PREFIX + "/whoami"))

    async def list_devices(self) -> list[DeviceInfo]:
        return DeviceList.model_validate(await self.session.get_json(API_PREFIX + "/devices")).devices

    async def register_device(
        self, device_name: str, signing_public: bytes, exchange_public: bytes
    ) -> DeviceInfo:
        body = RegisterDeviceRequest(
            device_name=device_name, signing_public=signing_public, exchange_public=exchange_public
        )
        return DeviceInfo.model_validate(
            await self.session.post_json(API_PREFIX + "/devices", body.model_dump())
        )

    async def logout(self) -> None:
        """Revoke this login on the hub (its access and refresh tokens)."""
        tokens = self.session.tokens
        body = {"refresh_token": tokens.refresh_token} if tokens and tokens.refresh_token else {}
        await self.session.request("POST", API_PREFIX + "/auth/logout", json=body)
