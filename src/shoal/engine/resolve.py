"""``shoal conflicts resolve``: keep the file at the path, the conflict copy, or both."""

from __future__ import annotations

import enum
import os

from shoal.engine.context import ArenaContext
from shoal.engine.disk import observe
from shoal.errors import ConflictError, NotFoundError, UsageError
from shoal.reconcile.kinds import Kind
from shoal.worktree.atomic import AtomicFile, delete


class Keep(enum.StrEnum):
    MINE = "mine"  # the file at the path stays; the conflict copies go
    THEIRS = "theirs"  # the conflict copy replaces the file at the path
    BOTH = "both"  # both stay; the conflict is only marked resolved


def open_conflicts(ctx: ArenaContext) -> list[tuple[str, str]]:
    return ctx.index.conflicts()


def resolve(ctx: ArenaContext, path: str, keep: Keep) -> list[str]:
    """Resolve the conflicts of ``path`` (the original or one copy); return the copies handled.

    The next sync sends the outcome to every device (the copy deleted, the path
    changed), so nothing is lost: the replaced versions stay in history.
    """
    rows = [(p, c) for p, c in ctx.index.conflicts() if path in (p, c)]
    if not rows:
        raise NotFoundError(f"{path!r} has no open conflict", hint="`shoal conflicts` lists them")
    if keep is Keep.THEIRS and len(rows) > 1 and all(c != path for _, c in rows):
        raise UsageError(
            f"{path!r} has {len(rows)} conflict copies; name the one to keep",
            hint="shoal conflicts resolve COPY_PATH --keep theirs",
        )
    chosen = rows if keep is not Keep.THEIRS else [r for r in rows if r[1] == path] or rows
    for original, copy in chosen:
        if keep is Keep.THEIRS:
            _replace_with(ctx, original, copy)
        if keep in (Keep.MINE, Keep.THEIRS):
            now = observe(ctx.root, copy)
            if now is not None:
                delete(ctx.root, copy, expected=now.stat_key())
    with ctx.index.batch() as b:
        for _, copy in chosen:
            b.resolve_conflict(copy)
    return [c for _, c in chosen]


def _replace_with(ctx: ArenaContext, original: str, copy: str) -> None:
    src = observe(ctx.root, copy)
    if src is None or src.kind is not Kind.FILE:
        raise ConflictError(f"the conflict copy {copy!r} is gone or not a file; nothing was changed")
    dst = observe(ctx.root, original)
    with (
        ctx.root.open_parent(copy) as (fd, name),
        open(name, "rb", opener=lambda n, flags: _open_at(fd, n)) as f,
        AtomicFile(ctx.root, original) as out,
    ):
        while piece := f.read(1 << 20):
            out.write(piece)
        out.commit(expected=None if dst is None else dst.stat_key(), mode=src.mode, mtime_ns=src.mtime_ns)


def _open_at(dir_fd: int, name: str) -> int:
    return os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
