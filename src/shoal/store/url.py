"""Open a blob store from a URL: ``file:///abs/dir``, a bare directory path, or ``s3://bucket/prefix``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, unquote, urlsplit

from shoal.errors import UsageError
from shoal.store.base import BlobStore
from shoal.store.file import FileBlobStore

if TYPE_CHECKING:  # the S3 client loads only for an s3:// URL
    from shoal.store.s3 import S3Location

FILE_EXAMPLE = "file:///var/lib/shoal/chunks"
S3_EXAMPLE = "s3://my-bucket/shoal?endpoint=https://s3.example.com&region=eu-west-1"
EXAMPLES = f"for example {FILE_EXAMPLE}, /var/lib/shoal/chunks or {S3_EXAMPLE}"

FILE_QUERY_KEYS = ("packs",)
S3_QUERY_KEYS = ("endpoint", "region", "access_key_id", "secret_access_key", "session_token", "max_retries")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_PREFIX_SEGMENT = re.compile(r"[A-Za-z0-9._-]+")
_LOOKS_LIKE_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
_ENDPOINT = re.compile(r"https?://[^/?#\s]+/?")


def open_blob_store(url: str) -> BlobStore:
    """Open the store a URL names. Nothing is touched on disk or on the network yet."""
    text = url.strip()
    if not text:
        raise UsageError("no store URL given", hint=EXAMPLES)
    if "://" not in text:
        return _open_directory(text)
    scheme = text.split("://", 1)[0].lower()
    if scheme == "file":
        return _open_file_url(text)
    if scheme == "s3":
        from shoal.store.s3 import S3BlobStore  # noqa: PLC0415  (obstore loads only for S3)

        return S3BlobStore(parse_s3_url(text))
    raise UsageError(f"unsupported store URL scheme {scheme + '://'!r} in {_shown(url)}", hint=EXAMPLES)


def parse_s3_url(url: str) -> S3Location:
    """Parse ``s3://bucket[/prefix][?endpoint=...&region=...&access_key_id=...&...]``."""
    from shoal.store.s3 import DEFAULT_MAX_RETRIES, S3Location  # noqa: PLC0415

    parts = urlsplit(url)
    if "@" in parts.netloc or ":" in parts.netloc or parts.fragment:
        raise UsageError(
            "an s3:// URL names only a bucket, a prefix and query parameters",
            hint="pass credentials as access_key_id= and secret_access_key= parameters or AWS_* "
            f"variables, e.g. {S3_EXAMPLE}",
        )
    bucket = parts.netloc
    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise UsageError(
            f"invalid bucket name {bucket!r} in the store URL",
            hint=f"a bucket name is 3-63 characters of a-z, 0-9, '.' and '-', e.g. {S3_EXAMPLE}",
        )
    prefix = _s3_prefix(unquote(parts.path))
    query = _s3_query(parts.query)
    endpoint = query.get("endpoint")
    if endpoint is not None and not _ENDPOINT.fullmatch(endpoint):
        raise UsageError(
            f"invalid S3 endpoint {endpoint!r}",
            hint="give the scheme, host and optional port only, e.g. endpoint=http://127.0.0.1:9000",
        )
    retries = query.get("max_retries", str(DEFAULT_MAX_RETRIES))
    if not retries.isdigit() or int(retries) > 100:
        raise UsageError(
            f"invalid max_retries {retries!r} in the store URL",
            hint="use a number from 0 to 100, e.g. max_retries=3",
        )
    return S3Location(
        bucket=bucket,
        prefix=prefix,
        endpoint=endpoint.rstrip("/") if endpoint else None,
        region=query.get("region"),
        access_key_id=query.get("access_key_id"),
        secret_access_key=query.get("secret_access_key"),
        session_token=query.get("session_token"),
        max_retries=int(retries),
    )


def _open_directory(text: str) -> FileBlobStore:
    if "\0" in text:
        raise UsageError("a store path cannot contain a NUL character", hint=EXAMPLES)
    if _LOOKS_LIKE_SCHEME.match(text):
        raise UsageError(f"malformed store URL {_shown(text)}", hint=EXAMPLES)
    return FileBlobStore(Path(text).expanduser().absolute())


def _open_file_url(text: str) -> FileBlobStore:
    parts = urlsplit(text)
    if parts.netloc not in ("", "localhost") or parts.fragment:
        raise UsageError(
            f"a file:// store URL takes an absolute local path and nothing else, got {_shown(text)}",
            hint=f"write three slashes for an absolute path, e.g. {FILE_EXAMPLE}",
        )
    path = unquote(parts.path)
    if not path.startswith("/") or "\0" in path:
        raise UsageError(f"invalid path in {_shown(text)}", hint=f"e.g. {FILE_EXAMPLE}")
    return FileBlobStore(Path(path), packs=_file_packs(parts.query))


def _file_packs(query: str) -> bool:
    """The one query parameter a file:// URL takes: ``packs=on`` (the default) or ``packs=off``."""
    if not query:
        return True
    try:
        parsed = parse_qs(query, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        raise UsageError("malformed query in the store URL", hint=f"e.g. {FILE_EXAMPLE}?packs=off") from None
    unknown = sorted(set(parsed) - set(FILE_QUERY_KEYS))
    if unknown:
        raise UsageError(
            f"unknown parameter {unknown[0]!r} in the file:// store URL",
            hint=f"the only parameter is packs=on or packs=off, e.g. {FILE_EXAMPLE}?packs=off",
        )
    values = parsed["packs"]
    if len(values) != 1 or values[0] not in ("on", "off"):
        raise UsageError(
            "parameter 'packs' must be given once, as packs=on or packs=off, in the store URL",
            hint=f"e.g. {FILE_EXAMPLE}?packs=off",
        )
    return values[0] == "on"


def _s3_prefix(path: str) -> str:
    stripped = path.strip("/")
    if not stripped:
        return ""
    segments = stripped.split("/")
    if any(s in (".", "..") or not _PREFIX_SEGMENT.fullmatch(s) for s in segments):
        raise UsageError(
            f"invalid prefix {stripped!r} in the store URL",
            hint=f"use segments of letters, digits, '.', '_' and '-', e.g. {S3_EXAMPLE}",
        )
    return "/".join(segments)


def _s3_query(query: str) -> dict[str, str]:
    try:
        parsed = parse_qs(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise UsageError("malformed query in the store URL", hint=f"e.g. {S3_EXAMPLE}") from None
    unknown = sorted(set(parsed) - set(S3_QUERY_KEYS))
    if unknown:
        raise UsageError(
            f"unknown parameter {unknown[0]!r} in the store URL",
            hint=f"known parameters: {', '.join(S3_QUERY_KEYS)}",
        )
    result = {}
    for key, values in parsed.items():
        if len(values) != 1 or not values[0]:
            raise UsageError(
                f"parameter {key!r} must be given exactly once, with a value, in the store URL",
                hint=f"e.g. {S3_EXAMPLE}",
            )
        result[key] = values[0]
    return result


def _shown(url: str) -> str:
    """The URL for an error message: query dropped (it may hold secrets), length bounded."""
    text = url.split("?", 1)[0]
    return repr(text if len(text) <= 120 else text[:117] + "...")
