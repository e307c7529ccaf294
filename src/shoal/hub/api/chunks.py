"""Chunks: which ones the tenant lacks, batch upload (verified before storing), streamed download."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from shoal.hub.api.common import Reader, Writer, now, parse_body, read_bounded
from shoal.hub.context import HubContext, get_context
from shoal.hub.quota.usage import store_new_chunks
from shoal.hub.sync import chunks as q
from shoal.model.ids import ChunkId, parse_chunk_id
from shoal.net.schemas_sync import (
    MAX_UPLOAD_BYTES,
    FetchRequest,
    MissingRequest,
    MissingResponse,
    UploadResult,
)

router = APIRouter(tags=["chunks"])
Ctx = Annotated[HubContext, Depends(get_context)]
_DOWNLOAD_PIECE = 256 * 1024


@router.post("/chunks/missing", response_model=MissingResponse)
async def missing_chunks(request: Request, ctx: Ctx, principal: Reader) -> MissingResponse:
    req = await parse_body(request, MissingRequest, 1024 * 1024)
    async with ctx.db.read() as conn:
        lacking = await q.missing(conn, principal.tenant_id, req.ids)
    return MissingResponse(missing=lacking)


@router.post(
    "/chunks",
    response_model=UploadResult,
    openapi_extra={"requestBody": {"content": {"application/octet-stream": {}}, "required": True}},
)
async def upload_chunks(request: Request, ctx: Ctx, principal: Writer) -> UploadResult:
    """Body: ``SCB1`` then ``id (32 bytes) | length (u32 BE) | envelope`` records (docs/protocol.md)."""
    body = await read_bounded(request, MAX_UPLOAD_BYTES)
    batch = q.parse_batch(body)
    del body
    # Verification decompresses and hashes up to 32 MiB: keep it off the event loop.
    await asyncio.to_thread(_verify_all, batch)
    # Stored durably first, then recorded within the tenant's quota (hub/quota/usage.py).
    fresh = {cid.hex() for cid in await store_new_chunks(ctx, principal.tenant_id, batch, now())}
    return UploadResult(
        stored=[cid.hex() for cid, _ in batch if cid.hex() in fresh],
        existing=[cid.hex() for cid, _ in batch if cid.hex() not in fresh],
    )


def _verify_all(batch: list[tuple[ChunkId, bytes]]) -> None:
    for cid, blob in batch:
        q.verify_blob(cid, blob)


@router.post(
    "/chunks/fetch",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
async def fetch_chunks(request: Request, ctx: Ctx, principal: Reader) -> StreamingResponse:
    """Many envelopes in one streamed answer, framed like uploads; see docs/protocol.md."""
    req = await parse_body(request, FetchRequest, 1024 * 1024)
    async with ctx.db.read() as conn:
        plan = await q.fetch_plan(conn, principal.tenant_id, req.ids)
    stream = q.fetch_stream(ctx.tenant_blobs(principal.tenant_id), plan)
    return StreamingResponse(stream, media_type="application/octet-stream")


@router.get(
    "/chunks/{chunk_id}",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
async def download_chunk(chunk_id: str, ctx: Ctx, principal: Reader) -> StreamingResponse:
    cid = parse_chunk_id(chunk_id)
    async with ctx.db.read() as conn:
        size = await q.chunk_size(conn, principal.tenant_id, chunk_id)
    blob = await ctx.tenant_blobs(principal.tenant_id).get(cid)

    async def pieces() -> AsyncIterator[bytes]:
        view = memoryview(blob)
        for start in range(0, len(view), _DOWNLOAD_PIECE):
            yield bytes(view[start : start + _DOWNLOAD_PIECE])

    headers = {"Content-Length": str(len(blob)), "X-Shoal-Stored-Size": str(size)}
    return StreamingResponse(pieces(), media_type="application/octet-stream", headers=headers)
