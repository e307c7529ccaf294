"""The file API of plain arenas (docs/api.md): upload, download with Range, list, meta, edit by path."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response, StreamingResponse

from shoal.errors import ChunkMissingError, NotFoundError
from shoal.hub.api.common import commit_group, device_key, now, parse_body
from shoal.hub.audit import log as audit
from shoal.hub.auth.principal import Principal
from shoal.hub.auth.scopes import FILES_READ, FILES_WRITE
from shoal.hub.context import HubContext, get_context
from shoal.hub.deps import require_scope
from shoal.hub.errors import PayloadTooLargeError
from shoal.hub.files import ingest, tree, uploads, write
from shoal.hub.files.download import parse_range, stream_bytes
from shoal.hub.files.schemas import (
    FileMeta,
    Listing,
    PathBody,
    RenameBody,
    RestoreBody,
    Upload,
    UploadCommitted,
    UploadCreate,
    WriteResult,
)
from shoal.hub.files.service import file_meta, list_item
from shoal.hub.sync.arenas import ArenaRow, get_arena
from shoal.hub.sync.log import restore, versions
from shoal.model.manifest import Manifest
from shoal.net.schemas_sync import CommitResult, RestoreRequest, VersionList, plain_path_key

router = APIRouter(tags=["files"])
Ctx = Annotated[HubContext, Depends(get_context)]
FileReader = Annotated[Principal, Depends(require_scope(FILES_READ))]
FileWriter = Annotated[Principal, Depends(require_scope(FILES_WRITE))]
PathQuery = Annotated[
    str, Query(min_length=1, max_length=4096, description="path in the arena, '/'-separated")
]
VersionQuery = Annotated[int | None, Query(ge=1, description="a version's seq (default: the current one)")]
MAX_PART_BYTES = 16 * 1024 * 1024
_PREFIX = "/arenas/{arena_id}/fs"


async def _plain_arena(ctx: HubContext, principal: Principal, arena_id: str) -> ArenaRow:
    async with ctx.db.read() as conn:
        arena = await get_arena(conn, principal.tenant_id, arena_id)
    tree.require_plain(arena)
    return arena


def _result(r: CommitResult) -> WriteResult:
    return WriteResult(first=r.first, last=r.last, cursor=r.cursor, conflicts=len(r.conflicts))


async def _announce(ctx: HubContext, arena: ArenaRow, result: CommitResult) -> None:
    if result.last > arena.head_seq:
        await ctx.notifier.publish(arena.id, result.last)


@router.get(_PREFIX + "/list", response_model=Listing)
async def list_folder(
    arena_id: str,
    ctx: Ctx,
    principal: FileReader,
    path: Annotated[str, Query(max_length=4096, description="the folder; empty for the arena root")] = "",
    after: Annotated[str, Query(max_length=255, description="`next_after` of the previous page")] = "",
    limit: Annotated[int, Query(ge=1, le=tree.MAX_LIST_PAGE)] = 100,
) -> Listing:
    folder = tree.clean_path(path) if path.strip("/") else ""
    async with ctx.db.read() as conn:
        arena = await get_arena(conn, principal.tenant_id, arena_id)
        tree.require_plain(arena)
        page, next_after = await tree.list_folder(conn, arena, folder, after, limit)
    return Listing(path=folder, items=[list_item(folder, n, e) for n, e in page], next_after=next_after)


@router.get(_PREFIX + "/meta", response_model=FileMeta)
async def meta(
    arena_id: str, path: PathQuery, ctx: Ctx, principal: FileReader, version: VersionQuery = None
) -> FileMeta:
    clean = tree.clean_path(path)
    async with ctx.db.read() as conn:
        arena = await get_arena(conn, principal.tenant_id, arena_id)
        tree.require_plain(arena)
        entry = await tree.entry_at(conn, arena, clean, version)
        acked = await tree.acked_by(conn, arena, entry.seq)
    return file_meta(entry, acked)


@router.get(
    _PREFIX + "/content",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"application/octet-stream": {}}},
        206: {"description": "the requested range"},
    },
)
async def download(
    arena_id: str,
    path: PathQuery,
    request: Request,
    ctx: Ctx,
    principal: FileReader,
    version: VersionQuery = None,
) -> StreamingResponse:
    clean = tree.clean_path(path)
    async with ctx.db.read() as conn:
        arena = await get_arena(conn, principal.tenant_id, arena_id)
        tree.require_plain(arena)
        entry = await tree.entry_at(conn, arena, clean, version)
    manifest = entry.manifest()
    wanted = parse_range(request.headers.get("range"), manifest.size)
    headers = {
        "Accept-Ranges": "bytes",
        "ETag": f'"{manifest.file_hash.hex()}"',
        "X-Shoal-Seq": str(entry.seq),
    }
    status = 200
    length = manifest.size
    if wanted is not None:
        status, length = 206, wanted.length
        headers["Content-Range"] = f"bytes {wanted.start}-{wanted.end}/{manifest.size}"
    headers["Content-Length"] = str(length)
    body = stream_bytes(ctx.tenant_blobs(principal.tenant_id), manifest, wanted)
    return StreamingResponse(body, status_code=status, media_type="application/octet-stream", headers=headers)


@router.delete(_PREFIX + "/content", response_model=WriteResult)
async def delete(arena_id: str, path: PathQuery, ctx: Ctx, principal: FileWriter) -> WriteResult:
    who = write.writer(principal.tenant_id, device_key(principal))
    clean = tree.clean_path(path)
    arena, result = await commit_group(ctx).run(lambda conn: write.delete_path(conn, who, arena_id, clean))
    await _announce(ctx, arena, result)
    audit.emit(
        ctx.extras, "delete", tenant_id=principal.tenant_id, actor=who.device, arena=arena_id, path=clean
    )
    return _result(result)


@router.post(_PREFIX + "/mkdir", response_model=WriteResult)
async def mkdir(arena_id: str, request: Request, ctx: Ctx, principal: FileWriter) -> WriteResult:
    req = await parse_body(request, PathBody, 16 * 1024)
    who = write.writer(principal.tenant_id, device_key(principal))
    clean = tree.clean_path(req.path)
    arena, result = await commit_group(ctx).run(lambda conn: write.make_folder(conn, who, arena_id, clean))
    await _announce(ctx, arena, result)
    return _result(result)


@router.post(_PREFIX + "/rename", response_model=WriteResult)
async def rename(arena_id: str, request: Request, ctx: Ctx, principal: FileWriter) -> WriteResult:
    req = await parse_body(request, RenameBody, 16 * 1024)
    who = write.writer(principal.tenant_id, device_key(principal))
    src, dst = tree.clean_path(req.from_path), tree.clean_path(req.to_path)
    arena, result = await commit_group(ctx).run(lambda conn: write.rename_path(conn, who, arena_id, src, dst))
    await _announce(ctx, arena, result)
    return _result(result)


@router.get(_PREFIX + "/versions", response_model=VersionList)
async def list_versions(arena_id: str, path: PathQuery, ctx: Ctx, principal: FileReader) -> VersionList:
    clean = tree.clean_path(path)
    async with ctx.db.read() as conn:
        arena = await get_arena(conn, principal.tenant_id, arena_id)
        tree.require_plain(arena)
        return await versions(conn, arena, plain_path_key(clean))


@router.post(_PREFIX + "/restore", response_model=WriteResult)
async def restore_version(arena_id: str, request: Request, ctx: Ctx, principal: FileWriter) -> WriteResult:
    req = await parse_body(request, RestoreBody, 16 * 1024)
    await _plain_arena(ctx, principal, arena_id)
    wire = RestoreRequest(path_key=plain_path_key(tree.clean_path(req.path)), seq=req.seq)
    device = device_key(principal)
    arena, result = await commit_group(ctx).run(
        lambda conn: restore(conn, principal.tenant_id, arena_id, wire, device=device, now=now())
    )
    await _announce(ctx, arena, result)
    audit.emit(
        ctx.extras,
        "restore",
        tenant_id=principal.tenant_id,
        actor=device,
        arena=arena_id,
        path=req.path,
        seq=req.seq,
    )
    return _result(result)


# -- uploads ------------------------------------------------------------------------------------


def _upload(ctx: HubContext, row: uploads.UploadRow) -> Upload:
    return Upload(
        id=row.id,
        path=row.path,
        parts=uploads.parts_of(ctx, row.id),
        max_part_bytes=MAX_PART_BYTES,
        expires_at=row.expires_at,
    )


@router.post(_PREFIX + "/uploads", response_model=Upload, status_code=201)
async def begin_upload(arena_id: str, request: Request, ctx: Ctx, principal: FileWriter) -> Upload:
    req = await parse_body(request, UploadCreate, 16 * 1024)
    clean = tree.clean_path(req.path)
    at = now()
    async with ctx.db.write() as conn:
        arena = await get_arena(conn, principal.tenant_id, arena_id)
        tree.require_plain(arena)
        row = await uploads.create_upload(
            conn,
            arena,
            clean,
            mode=req.mode,
            mtime_ns=req.mtime_ns if req.mtime_ns is not None else int(at * 1e9),
            base_seq=-1 if req.base_seq is None else req.base_seq,
            now=at,
        )
    return _upload(ctx, row)


async def _own_upload(
    ctx: HubContext, principal: Principal, arena_id: str, upload_id: str
) -> uploads.UploadRow:
    async with ctx.db.read() as conn:
        arena = await get_arena(conn, principal.tenant_id, arena_id)
        row = await uploads.get_upload(conn, principal.tenant_id, upload_id, now())
    if row.arena_id != arena.id:
        raise NotFoundError(f"upload {upload_id!r} does not belong to this arena")
    return row


@router.get(_PREFIX + "/uploads/{upload_id}", response_model=Upload)
async def upload_status(arena_id: str, upload_id: str, ctx: Ctx, principal: FileWriter) -> Upload:
    return _upload(ctx, await _own_upload(ctx, principal, arena_id, upload_id))


@router.put(
    _PREFIX + "/uploads/{upload_id}/parts/{number}",
    response_model=Upload,
    openapi_extra={"requestBody": {"content": {"application/octet-stream": {}}, "required": True}},
)
async def upload_part(
    arena_id: str, upload_id: str, number: int, request: Request, ctx: Ctx, principal: FileWriter
) -> Upload:
    """Send part ``number`` (1, 2, …; at most 16 MiB). Sending a part again replaces it."""
    row = await _own_upload(ctx, principal, arena_id, upload_id)
    uploads.part_path(ctx, upload_id, number)  # refuses a bad number before reading the body
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_PART_BYTES:
        raise PayloadTooLargeError(f"a part is at most {MAX_PART_BYTES} bytes, this one is {declared}")
    await uploads.receive_part(ctx, upload_id, number, request.stream(), MAX_PART_BYTES)
    ingest.part_staged(ctx, row, number, now())
    return _upload(ctx, row)


@router.post(_PREFIX + "/uploads/{upload_id}/commit", response_model=UploadCommitted)
async def commit_upload(arena_id: str, upload_id: str, ctx: Ctx, principal: FileWriter) -> UploadCommitted:
    """Cut the parts into chunks (those not cut as they arrived), store them, and make them the path's
    new version in one commit."""
    row = await _own_upload(ctx, principal, arena_id, upload_id)
    who = write.writer(principal.tenant_id, device_key(principal))

    async def put(manifest: Manifest) -> tuple[ArenaRow, CommitResult]:
        return await commit_group(ctx).run(
            lambda conn: write.put_file(
                conn,
                who,
                arena_id,
                row.path,
                manifest,
                mode=row.mode,
                mtime_ns=row.mtime_ns,
                base_seq=row.base_seq,
            )
        )

    try:
        arena, result = await put(await ingest.ingest(ctx, row, now()))
    except ChunkMissingError:
        # Chunks stored as the parts arrived were collected before this commit (an upload that
        # outlived the GC grace period): cut every part again, which stores them again.
        arena, result = await put(await ingest.ingest(ctx, row, now(), again=True))
    await _announce(ctx, arena, result)
    ingest.forget(ctx, upload_id)
    async with ctx.db.write() as conn:
        await uploads.drop_upload(ctx, conn, upload_id)
        entry = await tree.entry_at(conn, arena, row.path, result.last)
    return UploadCommitted(file=file_meta(entry, []), cursor=result.cursor)


@router.delete(_PREFIX + "/uploads/{upload_id}", status_code=204)
async def abort_upload(arena_id: str, upload_id: str, ctx: Ctx, principal: FileWriter) -> Response:
    await _own_upload(ctx, principal, arena_id, upload_id)
    ingest.forget(ctx, upload_id)
    async with ctx.db.write() as conn:
        await uploads.drop_upload(ctx, conn, upload_id)
    return Response(status_code=204)
