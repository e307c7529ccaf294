"""``SyncClient``: typed async calls for every sync endpoint of the hub (``docs/protocol.md``).

It rides on a ``HubSession`` (base URL, bearer token with refresh, error
translation); only the WebSocket is opened here, with the session's token.
Batching rules live here too, so callers hand over any number of ids or
chunks and the client splits them to fit the hub's limits.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

import httpx
import websockets
from websockets.asyncio.client import connect as ws_connect

from shoal.errors import AuthError, FormatError, IntegrityError, NetworkError, NotFoundError, ShoalError
from shoal.model.ids import ChunkId, chunk_id_hex, parse_chunk_id
from shoal.net.schemas_sync import (
    CHUNK_BATCH_MAGIC,
    FETCH_DEFERRED,
    FETCH_MISSING,
    MAX_CHUNK_BYTES,
    MAX_COMMIT_CHANGES,
    MAX_FETCH_IDS,
    MAX_MISSING_IDS,
    MAX_UPLOAD_BYTES,
    MAX_UPLOAD_CHUNKS,
    AckResult,
    Arena,
    ArenaCreate,
    ArenaList,
    ArenaUpdate,
    ChangeEntry,
    ChangeIn,
    ChangesPage,
    CommitRequest,
    CommitResult,
    ConflictPolicy,
    MissingResponse,
    RestoreRequest,
    StreamMessage,
    TreeItem,
    TreePage,
    UploadResult,
    VersionEntry,
    VersionList,
)

_BATCH_OVERHEAD = 36  # id (32) + length (4) per record
_JSON = {"Content-Type": "application/json"}


class HubTransport(Protocol):
    """What SyncClient needs of a session; ``shoal.net.http.HubSession`` provides it."""

    @property
    def base_url(self) -> str: ...

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        content: bytes | None = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response: ...

    def stream(
        self, method: str, path: str, *, json: Any = None
    ) -> AbstractAsyncContextManager[httpx.Response]: ...

    def auth_headers(self) -> dict[str, str]: ...

    def websocket_url(self, path: str) -> str: ...


def new_idempotency_key() -> str:
    return "c-" + secrets.token_urlsafe(18)


class SyncClient:
    """The sync API of one hub, for one logged-in device or token."""

    def __init__(self, session: HubTransport) -> None:
        self.session = session

    # -- arenas ---------------------------------------------------------------------------

    async def list_arenas(self, *, deleted: bool = False) -> list[Arena]:
        params = {"deleted": "true"} if deleted else None
        resp = await self.session.request("GET", "/api/v1/arenas", params=params)
        return ArenaList.model_validate_json(resp.content).arenas

    async def create_arena(
        self,
        name: str,
        *,
        encrypted: bool = False,
        conflict_policy: ConflictPolicy = "keep-both",
        keep_days: int = 30,
        keep_versions: int = 10,
    ) -> Arena:
        spec = ArenaCreate(
            name=name,
            encrypted=encrypted,
            conflict_policy=conflict_policy,
            keep_days=keep_days,
            keep_versions=keep_versions,
        )
        resp = await self.session.request("POST", "/api/v1/arenas", json=spec.model_dump(mode="json"))
        return Arena.model_validate_json(resp.content)

    async def get_arena(self, arena_id: str) -> Arena:
        resp = await self.session.request("GET", f"/api/v1/arenas/{_seg(arena_id)}")
        return Arena.model_validate_json(resp.content)

    async def find_arena(self, name_or_id: str, *, deleted: bool = False) -> Arena:
        """The live (or, with ``deleted``, deleted) arena with this name or id."""
        for arena in await self.list_arenas(deleted=deleted):
            if name_or_id in (arena.name, arena.id):
                return arena
        state = "deleted arena" if deleted else "arena"
        raise NotFoundError(f"no {state} named {name_or_id!r}", hint="`shoal arena list` shows your arenas")

    async def update_arena(
        self,
        arena_id: str,
        *,
        name: str | None = None,
        conflict_policy: ConflictPolicy | None = None,
        keep_days: int | None = None,
        keep_versions: int | None = None,
    ) -> Arena:
        spec = ArenaUpdate(
            name=name, conflict_policy=conflict_policy, keep_days=keep_days, keep_versions=keep_versions
        )
        body = spec.model_dump(mode="json", exclude_none=True)
        resp = await self.session.request("PATCH", f"/api/v1/arenas/{_seg(arena_id)}", json=body)
        return Arena.model_validate_json(resp.content)

    async def rename_arena(self, arena_id: str, name: str) -> Arena:
        return await self.update_arena(arena_id, name=name)

    async def delete_arena(self, arena_id: str) -> Arena:
        resp = await self.session.request("DELETE", f"/api/v1/arenas/{_seg(arena_id)}")
        return Arena.model_validate_json(resp.content)

    async def undelete_arena(self, arena_id: str) -> Arena:
        resp = await self.session.request("POST", f"/api/v1/arenas/{_seg(arena_id)}/undelete")
        return Arena.model_validate_json(resp.content)

    # -- chunks ---------------------------------------------------------------------------

    async def missing_chunks(self, ids: Sequence[str | ChunkId]) -> list[str]:
        """The ids (hex) the hub lacks for this tenant, in the order given."""
        wanted = [i if isinstance(i, str) else chunk_id_hex(i) for i in ids]
        out: list[str] = []
        for start in range(0, len(wanted), MAX_MISSING_IDS):
            part = wanted[start : start + MAX_MISSING_IDS]
            resp = await self.session.request("POST", "/api/v1/chunks/missing", json={"ids": part})
            out.extend(MissingResponse.model_validate_json(resp.content).missing)
        return out

    async def upload_chunks(self, blobs: Sequence[tuple[ChunkId, bytes]]) -> UploadResult:
        """Upload stored-form chunks (envelopes), split into batches the hub accepts."""
        stored: list[str] = []
        existing: list[str] = []
        for batch in _batches(blobs):
            body = encode_chunk_batch(batch)
            resp = await self.session.request(
                "POST", "/api/v1/chunks", content=body, headers={"Content-Type": "application/octet-stream"}
            )
            result = UploadResult.model_validate_json(resp.content)
            stored.extend(result.stored)
            existing.extend(result.existing)
        return UploadResult(stored=stored, existing=existing)

    async def download_chunk(self, cid: ChunkId | str) -> bytes:
        """The stored form (envelope) of one chunk, streamed and bounded; the caller verifies it."""
        text = cid if isinstance(cid, str) else chunk_id_hex(cid)
        parse_chunk_id(text)
        parts: list[bytes] = []
        total = 0
        async with self.session.stream("GET", f"/api/v1/chunks/{text}") as resp:
            async for piece in resp.aiter_bytes():
                total += len(piece)
                if total > MAX_CHUNK_BYTES:
                    raise IntegrityError(f"the hub sent more than {MAX_CHUNK_BYTES} bytes for chunk {text}")
                parts.append(piece)
        return b"".join(parts)

    async def download_chunks(self, ids: Sequence[ChunkId | str]) -> AsyncIterator[tuple[ChunkId, bytes]]:
        """Stored forms (envelopes) of many chunks, a few requests for all of them; the caller
        verifies each. Ids the hub does not hold for this tenant are left out (not an error)."""
        todo = list(dict.fromkeys(parse_chunk_id(i) if isinstance(i, str) else i for i in ids))
        while todo:
            part, todo = todo[:MAX_FETCH_IDS], todo[MAX_FETCH_IDS:]
            deferred: list[ChunkId] = []
            async for cid, blob in self._fetch(part):
                if blob is None:
                    deferred.append(cid)
                else:
                    yield cid, blob
            if deferred and len(deferred) == len(part):
                raise IntegrityError("the hub deferred every chunk of a fetch; it cannot make progress")
            todo = deferred + todo

    async def _fetch(self, part: list[ChunkId]) -> AsyncIterator[tuple[ChunkId, bytes | None]]:
        """One fetch: (id, envelope) per chunk sent, (id, None) per chunk deferred to another request."""
        asked = set(part)
        answered: set[ChunkId] = set()
        reader = _FetchReader()
        body = {"ids": [chunk_id_hex(cid) for cid in part]}
        async with self.session.stream("POST", "/api/v1/chunks/fetch", json=body) as resp:
            async for piece in resp.aiter_bytes():
                for cid, length, blob in reader.feed(piece):
                    if cid not in asked or cid in answered:
                        raise IntegrityError(
                            f"the hub answered a fetch with chunk {chunk_id_hex(cid)} unasked"
                        )
                    answered.add(cid)
                    if length == FETCH_DEFERRED:
                        yield cid, None
                    elif length != FETCH_MISSING:
                        yield cid, blob
        reader.finish()

    # -- the change log -------------------------------------------------------------------

    async def commit(
        self,
        arena_id: str,
        changes: Sequence[ChangeIn],
        *,
        idempotency_key: str | None = None,
        retries: int = 2,
    ) -> CommitResult:
        """Commit one batch; a lost response is retried with the same key, so it lands exactly once."""
        if len(changes) > MAX_COMMIT_CHANGES:
            raise FormatError(f"a commit holds at most {MAX_COMMIT_CHANGES} changes; split the batch")
        req = CommitRequest(idempotency_key=idempotency_key or new_idempotency_key(), changes=list(changes))
        body = req.model_dump_json().encode()  # pydantic's own encoder: ~4x less CPU than dict + json
        for attempt in range(retries + 1):
            try:
                resp = await self.session.request(
                    "POST", f"/api/v1/arenas/{_seg(arena_id)}/commit", content=body, headers=_JSON
                )
            except NetworkError:
                if attempt == retries:
                    raise
                continue
            return CommitResult.model_validate_json(resp.content)
        raise AssertionError("unreachable")  # pragma: no cover

    async def changes(self, arena_id: str, since: int = 0, limit: int = 1000) -> ChangesPage:
        params = {"since": since, "limit": limit}
        resp = await self.session.request("GET", f"/api/v1/arenas/{_seg(arena_id)}/changes", params=params)
        return ChangesPage.model_validate_json(resp.content)

    async def iter_changes(
        self, arena_id: str, since: int = 0, page: int = 5000
    ) -> AsyncIterator[ChangeEntry]:
        """Every entry after ``since``, page by page, until the head at the time of the last page.

        The next page is requested (from the cursor the hub also sends in headers) while this one
        is parsed, so the hub's work and the client's overlap; the body stays the authority.
        """
        path = f"/api/v1/arenas/{_seg(arena_id)}/changes"

        def page_after(cursor: int) -> asyncio.Future[httpx.Response]:
            return asyncio.ensure_future(
                self.session.request("GET", path, params={"since": cursor, "limit": page})
            )

        fetch = page_after(since)
        try:
            while True:
                resp = await fetch
                ahead = _next_cursor_hint(resp.headers)
                if ahead is not None:
                    fetch = page_after(ahead)
                got = ChangesPage.model_validate_json(resp.content)
                if ahead is not None and ahead != got.cursor:
                    raise FormatError(
                        f"the hub's page headers say cursor {ahead}, its body says {got.cursor}",
                        hint="the hub or a proxy in front of it altered the answer",
                    )
                for entry in got.entries:
                    yield entry
                if not got.more:
                    return
                if ahead is None:
                    fetch = page_after(got.cursor)
        finally:
            if not fetch.done():
                fetch.cancel()
                with contextlib.suppress(asyncio.CancelledError, ShoalError):
                    await fetch

    async def ack(self, arena_id: str, cursor: int) -> int:
        resp = await self.session.request(
            "POST", f"/api/v1/arenas/{_seg(arena_id)}/ack", json={"cursor": cursor}
        )
        return AckResult.model_validate_json(resp.content).cursor

    async def versions(self, arena_id: str, path_key: str) -> list[VersionEntry]:
        resp = await self.session.request(
            "GET", f"/api/v1/arenas/{_seg(arena_id)}/versions", params={"path_key": path_key}
        )
        return VersionList.model_validate_json(resp.content).versions

    async def restore(
        self, arena_id: str, path_key: str, seq: int, *, device: str | None = None
    ) -> CommitResult:
        body = RestoreRequest(path_key=path_key, seq=seq, device=device).model_dump(
            mode="json", exclude_none=True
        )
        resp = await self.session.request("POST", f"/api/v1/arenas/{_seg(arena_id)}/restore", json=body)
        return CommitResult.model_validate_json(resp.content)

    async def tree_page(self, arena_id: str, after: str = "", limit: int = 1000) -> TreePage:
        params = {"after": after, "limit": limit}
        resp = await self.session.request("GET", f"/api/v1/arenas/{_seg(arena_id)}/tree", params=params)
        return TreePage.model_validate_json(resp.content)

    async def tree(self, arena_id: str) -> tuple[int, list[TreeItem]]:
        """The whole current tree and the cursor of its first page (pull changes since it afterwards)."""
        first = await self.tree_page(arena_id)
        items = list(first.items)
        after = first.next_after
        while after is not None:
            page = await self.tree_page(arena_id, after)
            items.extend(page.items)
            after = page.next_after
        return first.cursor, items

    async def watch(self, arena_id: str, since: int = 0) -> AsyncIterator[StreamMessage]:
        """WebSocket: the backlog after ``since`` as ``changes`` pages, then a ``cursor`` per new commit."""
        await self.get_arena(arena_id)  # a plain request first: refreshes an expiring token, 404s early
        path = f"/api/v1/arenas/{_seg(arena_id)}/ws?since={int(since)}"
        url = self.session.websocket_url(path)
        try:
            async with ws_connect(
                url, additional_headers=self.session.auth_headers(), max_size=64 * 1024 * 1024
            ) as ws:
                async for raw in ws:
                    yield StreamMessage.model_validate_json(raw)
                _raise_for_close(ws.close_code, ws.close_reason or "")
        except websockets.ConnectionClosedError as exc:
            _raise_for_close(exc.rcvd.code if exc.rcvd else None, exc.rcvd.reason if exc.rcvd else "")
            raise NetworkError(f"the watch of arena {arena_id} was cut: {exc}") from exc
        except (OSError, websockets.InvalidHandshake) as exc:
            raise NetworkError(
                f"cannot watch arena {arena_id} at {self.session.base_url}: {exc}",
                hint="check that the hub is running and reachable",
            ) from exc


def encode_chunk_batch(blobs: Sequence[tuple[ChunkId, bytes]]) -> bytes:
    """The upload body: ``SCB1`` then ``id (32) | length (u32 BE) | blob`` per chunk."""
    parts = [CHUNK_BATCH_MAGIC]
    for cid, blob in blobs:
        parts.append(bytes(cid) + len(blob).to_bytes(4, "big"))
        parts.append(blob)
    return b"".join(parts)


class _FetchReader:
    """Incremental parser of a fetch answer (``SCB1`` then ``id | u32 length | envelope`` records)."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.magic = False

    def feed(self, piece: bytes) -> list[tuple[ChunkId, int, bytes]]:
        self.buf += piece
        out: list[tuple[ChunkId, int, bytes]] = []
        if not self.magic:
            if len(self.buf) < len(CHUNK_BATCH_MAGIC):
                return out
            if bytes(self.buf[: len(CHUNK_BATCH_MAGIC)]) != CHUNK_BATCH_MAGIC:
                raise FormatError("the hub's chunk fetch answer does not start with the SCB1 magic")
            del self.buf[: len(CHUNK_BATCH_MAGIC)]
            self.magic = True
        pos = 0
        while len(self.buf) - pos >= _BATCH_OVERHEAD:
            cid = ChunkId(bytes(self.buf[pos : pos + 32]))
            length = int.from_bytes(self.buf[pos + 32 : pos + 36], "big")
            if length in (FETCH_MISSING, FETCH_DEFERRED):
                out.append((cid, length, b""))
                pos += _BATCH_OVERHEAD
                continue
            if length > MAX_CHUNK_BYTES:
                raise IntegrityError(f"the hub sent {length} bytes for chunk {chunk_id_hex(cid)}")
            end = pos + _BATCH_OVERHEAD + length
            if len(self.buf) < end:
                break
            out.append((cid, length, bytes(self.buf[pos + _BATCH_OVERHEAD : end])))
            pos = end
        del self.buf[:pos]
        return out

    def finish(self) -> None:
        if not self.magic or self.buf:
            raise NetworkError("the hub's chunk fetch answer was cut short", hint="sync again")


def _batches(blobs: Sequence[tuple[ChunkId, bytes]]) -> list[list[tuple[ChunkId, bytes]]]:
    out: list[list[tuple[ChunkId, bytes]]] = []
    current: list[tuple[ChunkId, bytes]] = []
    size = len(CHUNK_BATCH_MAGIC)
    for cid, blob in blobs:
        if len(blob) > MAX_CHUNK_BYTES:
            raise FormatError(
                f"chunk {chunk_id_hex(cid)} is {len(blob)} bytes; the hub takes up to {MAX_CHUNK_BYTES}"
            )
        need = _BATCH_OVERHEAD + len(blob)
        if current and (size + need > MAX_UPLOAD_BYTES or len(current) >= MAX_UPLOAD_CHUNKS):
            out.append(current)
            current, size = [], len(CHUNK_BATCH_MAGIC)
        current.append((cid, blob))
        size += need
    if current:
        out.append(current)
    return out


def _seg(arena_id: str) -> str:
    """An arena id as one URL path segment (ids are URL-safe; anything else is refused here)."""
    if not arena_id or not all(ch.isalnum() or ch in "-_" for ch in arena_id):
        raise NotFoundError(f"arena {arena_id!r} does not exist", hint="`shoal arena list` shows your arenas")
    return arena_id


def _raise_for_close(code: int | None, reason: str) -> None:
    error: ShoalError | None = None
    if code in (4401, 4403):
        error = AuthError(
            reason or "the hub closed the watch: not authorised", hint="log in again with `shoal login`"
        )
    elif code == 4404:
        error = NotFoundError(reason or "the arena does not exist")
    elif code == 1011:
        error = NetworkError(f"the hub ended the watch after an error: {reason}")
    if error is not None:
        raise error


def _next_cursor_hint(headers: httpx.Headers) -> int | None:
    """The cursor of the next page when the hub's headers say one is waiting (older hubs send none)."""
    if headers.get("x-shoal-more") != "1":
        return None
    cursor = headers.get("x-shoal-cursor", "")
    return int(cursor) if cursor.isdigit() else None
