"""Wire models of the auth API (``/api/v1/auth``, ``/api/v1/devices``, ``/api/v1/whoami``).

Public keys travel as standard base64. The device-code and token endpoints
follow RFC 8628 / RFC 6749: their errors are ``{"error": "authorization_pending",
"error_description": "..."}`` with status 400, not the hub's usual error body.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer

AUTH_PROTOCOL_VERSION = 1
DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


def _from_b64(value: object) -> object:
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError("not valid base64") from exc
    return value


def _to_b64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


PublicKey = Annotated[
    bytes,
    BeforeValidator(_from_b64),
    PlainSerializer(_to_b64, return_type=str),
    Field(min_length=32, max_length=32),
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class DeviceCodeRequest(_Model):
    device_name: str = Field(min_length=1, max_length=128)
    signing_public: PublicKey
    exchange_public: PublicKey
    tenant: str | None = Field(default=None, max_length=64, description="a team to act in; default: the user")


class DeviceCodeResponse(_Model):
    device_code: str
    user_code: str
    verification_uri: str
    verification_uri_complete: str
    expires_in: int
    interval: int


class DeviceTokenRequest(_Model):
    grant_type: str = DEVICE_CODE_GRANT
    device_code: str = Field(min_length=1, max_length=200)


class RefreshRequest(_Model):
    refresh_token: str = Field(min_length=1, max_length=200)


class LogoutRequest(_Model):
    refresh_token: str | None = Field(default=None, max_length=200)


class TokenResponse(_Model):
    access_token: str
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105 - the RFC 6749 type name
    expires_in: int
    refresh_token: str | None = None
    scope: str


class OAuthErrorBody(_Model):
    error: str
    error_description: str | None = None


class RegisterDeviceRequest(_Model):
    device_name: str = Field(min_length=1, max_length=128)
    signing_public: PublicKey
    exchange_public: PublicKey


class DeviceInfo(_Model):
    id: str
    name: str
    user: str
    signing_public: PublicKey
    exchange_public: PublicKey
    created_at: float
    last_seen_at: float | None = None
    revoked: bool = False


class DeviceList(_Model):
    v: int = AUTH_PROTOCOL_VERSION
    devices: list[DeviceInfo]


class WhoAmI(_Model):
    v: int = AUTH_PROTOCOL_VERSION
    user: str
    tenant: str
    tenant_kind: Literal["user", "team"]
    device_id: str | None = None
    device_name: str | None = None
    token_kind: Literal["access", "pat"]
    scopes: list[str]
