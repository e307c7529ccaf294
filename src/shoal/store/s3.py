"""A blob store in an S3-compatible bucket: ``s3://bucket/prefix?endpoint=...``, through obstore.

Keys follow the layout of ``shoal.store.base`` (``<prefix>/ab/abcd…``, scopes under ``ns/``), so
a file store copied into a bucket opens as the same store. Puts are conditional
(``If-None-Match: *``): an id that exists is left alone, and a 412 from a concurrent writer counts
as success. A server that does not implement conditional puts gets plain puts from then on,
which is equally safe because an id names its content.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import TYPE_CHECKING, NoReturn
from urllib.parse import quote, urlencode

import obstore
from obstore.exceptions import (
    AlreadyExistsError,
    BaseError,
    NotSupportedError,
    PermissionDeniedError,
    PreconditionError,
    UnauthenticatedError,
)
from obstore.store import S3Store

from shoal.errors import ChunkMissingError, StorageError
from shoal.model.ids import ChunkId
from shoal.store.base import (
    NAMESPACE_DIR,
    SHARD_HEX_LEN,
    BlobStore,
    blob_key,
    id_from_blob_name,
    is_shard_name,
    scope_segments,
)

if TYPE_CHECKING:
    from obstore.store import ClientConfig, RetryConfig, S3Config

DEFAULT_PARALLEL = 16
DEFAULT_MAX_RETRIES = 10
DEFAULT_LIST_THRESHOLD = 8  # measured against moto: see docs/dev/stores.md
_LIST_PAGE = 1000
_HEADS_PER_PAGE = 4  # one listing page of 1000 keys costs about as much as a few HEADs
_PROBE_KEY = "ns/.probe"  # never written: not a blob key, and "ns/" holds only scope directories


@dataclass(frozen=True, slots=True)
class S3Location:
    """Where the blobs live and how to reach them. Secrets never appear in ``url``."""

    bucket: str
    prefix: str = ""
    endpoint: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None
    max_retries: int = DEFAULT_MAX_RETRIES

    @property
    def url(self) -> str:
        query = {
            key: value
            for key, value in (("endpoint", self.endpoint), ("region", self.region))
            if value is not None
        }
        path = f"/{quote(self.prefix)}" if self.prefix else ""
        return f"s3://{self.bucket}{path}" + (f"?{urlencode(query)}" if query else "")

    @property
    def where(self) -> str:
        """How error messages name the store: bucket, prefix and endpoint."""
        return f"{self.url} ({self.endpoint or 'AWS S3'})"


class S3BlobStore(BlobStore):
    """Blobs as objects in one bucket under one prefix."""

    def __init__(
        self,
        location: S3Location,
        *,
        max_parallel: int = DEFAULT_PARALLEL,
        list_threshold: int = DEFAULT_LIST_THRESHOLD,
    ) -> None:
        self._location = location
        self._max_parallel = max(1, max_parallel)
        self._list_threshold = max(1, list_threshold)
        self._conditional_put = True
        self._bucket_seen = False
        self._store = _open_s3(location)

    @property
    def url(self) -> str:
        return self._location.url

    def scoped(self, prefix: str) -> S3BlobStore:
        parts = [self._location.prefix] if self._location.prefix else []
        for segment in scope_segments(prefix):
            parts += [NAMESPACE_DIR, segment]
        return S3BlobStore(
            replace(self._location, prefix="/".join(parts)),
            max_parallel=self._max_parallel,
            list_threshold=self._list_threshold,
        )

    async def close(self) -> None:
        return None

    # -- reads -------------------------------------------------------------------------------

    async def has_many(self, ids: Iterable[ChunkId]) -> set[ChunkId]:
        """HEAD each id, except where many ids share a shard: there one listing answers them all."""
        wanted = list(dict.fromkeys(ids))
        by_shard: dict[str, list[ChunkId]] = {}
        for cid in wanted:
            by_shard.setdefault(blob_key(cid)[:SHARD_HEX_LEN], []).append(cid)
        limit = asyncio.Semaphore(self._max_parallel)
        found: set[ChunkId] = set()

        async def head(cid: ChunkId) -> None:
            async with limit:
                try:
                    await obstore.head_async(self._store, blob_key(cid))
                except FileNotFoundError:
                    return
                except (BaseError, OSError) as exc:
                    self._fail("check", cid, exc)
                found.add(cid)

        async def listing(shard: str, cids: list[ChunkId]) -> None:
            async with limit:
                unsettled = await self._list_shard_range(shard, cids, found)
            await asyncio.gather(*(head(cid) for cid in unsettled))

        tasks = []
        for shard, cids in by_shard.items():
            if len(cids) >= self._list_threshold:
                tasks.append(listing(shard, cids))
            else:
                tasks.extend(head(cid) for cid in cids)
        await asyncio.gather(*tasks)
        if len(found) < len(wanted):
            await self._check_bucket()
        return found

    async def _list_shard_range(self, shard: str, cids: list[ChunkId], found: set[ChunkId]) -> list[ChunkId]:
        """List ``shard`` over the key range of ``cids``, adding the present ones to ``found``.

        Keys come back in lexicographic order, so the listing starts just below the smallest
        wanted key and stops past the largest. It spends at most one page per
        ``_HEADS_PER_PAGE`` ids; the ids it did not reach are returned for HEAD requests.
        """
        wanted = {blob_key(cid): cid for cid in cids}
        keys = sorted(wanted)
        stream = obstore.list(self._store, shard, offset=keys[0][:-1], chunk_size=_LIST_PAGE)
        settled_up_to = ""
        try:
            for _ in range(max(1, len(cids) // _HEADS_PER_PAGE)):
                try:
                    page = await stream.__anext__()
                except StopAsyncIteration:
                    return []
                for meta in page:
                    if meta["path"] in wanted:
                        found.add(wanted[meta["path"]])
                if page:
                    settled_up_to = page[-1]["path"]
                if settled_up_to >= keys[-1]:
                    return []
        except (BaseError, OSError) as exc:
            self._fail("check", None, exc)
        return [wanted[key] for key in keys if key > settled_up_to]

    async def _check_bucket(self) -> None:
        """A HEAD answers 404 alike for a missing key and a missing bucket; a GET's body tells them apart."""
        if self._bucket_seen:
            return
        try:
            await obstore.get_async(self._store, _PROBE_KEY)
        except FileNotFoundError as exc:
            self._raise_if_no_bucket(exc)
        except (BaseError, OSError) as exc:
            self._fail("check", None, exc)
        self._bucket_seen = True

    async def get(self, cid: ChunkId) -> bytes:
        try:
            result = await obstore.get_async(self._store, blob_key(cid))
            return bytes(await result.bytes_async())
        except FileNotFoundError as exc:
            self._raise_if_no_bucket(exc)
            raise ChunkMissingError(f"chunk {cid.hex()} is not in {self._location.where}") from None
        except (BaseError, OSError) as exc:
            self._fail("read", cid, exc)

    async def get_many(self, ids: Iterable[ChunkId]) -> dict[ChunkId, bytes]:
        limit = asyncio.Semaphore(self._max_parallel)
        found: dict[ChunkId, bytes] = {}

        async def one(cid: ChunkId) -> None:
            async with limit:
                with contextlib.suppress(ChunkMissingError):
                    found[cid] = await self.get(cid)

        await asyncio.gather(*(one(cid) for cid in dict.fromkeys(ids)))
        return found

    async def size(self, cid: ChunkId) -> int:
        try:
            meta = await obstore.head_async(self._store, blob_key(cid))
        except FileNotFoundError as exc:
            self._raise_if_no_bucket(exc)
            raise ChunkMissingError(f"chunk {cid.hex()} is not in {self._location.where}") from None
        except (BaseError, OSError) as exc:
            self._fail("check", cid, exc)
        return meta["size"]

    async def iterate(self) -> AsyncIterator[ChunkId]:
        # Listing shard by shard never walks into the scoped namespaces under ``ns/``.
        try:
            top = await obstore.list_with_delimiter_async(self._store, None)
        except (BaseError, OSError) as exc:
            self._fail("list", None, exc)
        shards = sorted(p.rstrip("/") for p in top["common_prefixes"] if is_shard_name(p.rstrip("/")))
        for shard in shards:
            stream = obstore.list(self._store, shard, chunk_size=_LIST_PAGE)
            while True:
                try:
                    page = await stream.__anext__()
                except StopAsyncIteration:
                    break
                except (BaseError, OSError) as exc:
                    self._fail("list", None, exc)
                for meta in page:
                    cid = _id_from_key(shard, meta["path"])
                    if cid is not None:
                        yield cid

    # -- writes ------------------------------------------------------------------------------

    async def put_many(self, blobs: Sequence[tuple[ChunkId, bytes]]) -> None:
        unique = dict(blobs)
        limit = asyncio.Semaphore(self._max_parallel)

        async def put_one(cid: ChunkId, data: bytes) -> None:
            async with limit:
                await self._put(cid, data)

        await asyncio.gather(*(put_one(cid, data) for cid, data in unique.items()))

    async def _put(self, cid: ChunkId, data: bytes) -> None:
        key = blob_key(cid)
        if self._conditional_put:
            try:
                await obstore.put_async(self._store, key, data, mode="create", use_multipart=False)
            except (AlreadyExistsError, PreconditionError):
                return
            except NotSupportedError:
                self._conditional_put = False
            except (BaseError, OSError) as exc:
                self._fail("write", cid, exc)
            else:
                return
        try:
            await obstore.put_async(self._store, key, data, use_multipart=False)
        except (BaseError, OSError) as exc:
            self._fail("write", cid, exc)

    async def delete(self, cid: ChunkId) -> None:
        try:
            await obstore.delete_async(self._store, blob_key(cid))
        except FileNotFoundError:
            return
        except (BaseError, OSError) as exc:
            self._fail("delete", cid, exc)

    # -- errors ------------------------------------------------------------------------------

    def _raise_if_no_bucket(self, exc: BaseException) -> None:
        if "NoSuchBucket" in str(exc):
            raise StorageError(
                f"the bucket {self._location.bucket!r} does not exist at {self._location.where}",
                hint="create the bucket first, or fix the bucket name in the store URL",
            ) from None

    def _fail(self, action: str, cid: ChunkId | None, exc: BaseException) -> NoReturn:
        self._raise_if_no_bucket(exc)
        what = f"chunk {cid.hex()}" if cid is not None else "the blobs"
        reason = _first_line(exc)
        if isinstance(exc, (PermissionDeniedError, UnauthenticatedError)):
            raise StorageError(
                f"access denied to {self._location.where} ({action} {what}): {reason}",
                hint="check the credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or the URL's "
                "access_key_id / secret_access_key) and the bucket policy",
            ) from None
        raise StorageError(
            f"could not {action} {what} in {self._location.where}: {reason}",
            hint="check that the endpoint is reachable and the bucket exists, then retry",
        ) from None


def _open_s3(location: S3Location) -> S3Store:
    config: S3Config = {}
    if location.endpoint is not None:
        config["endpoint"] = location.endpoint
        # AWS_ENDPOINT_URL_S3 in the environment would otherwise win over the URL's endpoint.
        config["aws_endpoint_url_s3"] = location.endpoint
        config["virtual_hosted_style_request"] = False
    if location.region is not None:
        config["region"] = location.region
    if location.access_key_id is not None:
        config["access_key_id"] = location.access_key_id
    if location.secret_access_key is not None:
        config["secret_access_key"] = location.secret_access_key
    if location.session_token is not None:
        config["session_token"] = location.session_token
    client: ClientConfig = {"allow_http": bool(location.endpoint and location.endpoint.startswith("http://"))}
    retry: RetryConfig = {"max_retries": location.max_retries, "retry_timeout": timedelta(minutes=3)}
    try:
        return S3Store(
            location.bucket,
            prefix=location.prefix or None,
            config=config,
            client_options=client,
            retry_config=retry,
        )
    except (BaseError, OSError, ValueError) as exc:
        raise StorageError(f"cannot open {location.where}: {_first_line(exc)}") from None


def _id_from_key(shard: str, key: str) -> ChunkId | None:
    head, _, name = key.rpartition("/")
    return id_from_blob_name(shard, name) if head == shard else None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."
