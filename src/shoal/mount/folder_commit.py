"""Changes made through a mount, recorded in the arena's folder, where the sync engine picks them up.

For an arena this device also syncs as a folder, the folder is what the
engine pushes: a file written through the mount is written into the folder
(atomically, with the same stat re-check the engine's own writes use), and
the next push sends it to the hub like any local edit — offline too, since
the push waits for the hub. Nothing the folder holds is ever overwritten
unless it is exactly the version the mount showed: if the user changed the
folder's copy meanwhile, the mount's content is kept next to it as a
conflict copy instead.

In a folder-mode arena an online-only file is a stub ``NAME.shoal`` in the
folder. A write through the mount puts the real file there and removes the
stub (the push sends it as an edit), a delete removes the stub, a rename
moves it (the push sends a rename, nothing uploaded) — each only while the
stub is still the version the mount showed.
"""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime

from shoal.errors import ConflictError, StorageError
from shoal.model.manifest import Manifest
from shoal.reconcile.names import conflict_copy_name
from shoal.state.index import StatKey
from shoal.vfs.changes import ChangeOp, LocalChange
from shoal.worktree.atomic import AtomicFile, delete, make_dir, make_symlink, rename
from shoal.worktree.entries import ScanEntry, entry_from_stat
from shoal.worktree.paths import ArenaRoot
from shoal.worktree.stub import observe_stub, remove_stub, stub_path

_BLOCK = 1024 * 1024
MOUNT_DEVICE_TAG = "MOUNT"


class FolderCommit:
    """A ``CommitFn`` for ``ArenaFS`` that applies each change to the arena's folder."""

    def __init__(
        self, root: ArenaRoot, *, arena_id: str | None = None, device_short: str = MOUNT_DEVICE_TAG
    ) -> None:
        self.root = root
        self.arena_id = arena_id  # None: the folder holds no stubs (or they are not looked for)
        self.device_short = device_short
        self._written: dict[str, StatKey] = {}  # what this mount last put at a path

    async def __call__(self, change: LocalChange) -> Manifest | None:
        await asyncio.to_thread(self._apply, change)
        return None  # the engine records it when it pushes; the overlay serves reads until then

    def _expected(self, change: LocalChange) -> StatKey | None:
        """The stat the folder's copy must still have: what this mount wrote there last, else the
        synced version the mount showed (None: the path must not exist)."""
        if change.path in self._written:
            return self._written[change.path]
        return change.base

    def _shown_stub(self, path: str, expected: StatKey | None) -> ScanEntry | None:
        """The stat of ``path``'s stub file when the path is online-only here and its stub is still
        the version the mount showed; None otherwise."""
        if self.arena_id is None or expected is None or self.root.lstat(path) is not None:
            return None
        stub = observe_stub(self.root, path, self.arena_id)
        if stub is None or stub.stat_key() != expected:
            return None
        return self._observe(stub_path(path))

    def _observe(self, path: str) -> ScanEntry | None:
        info = self.root.lstat(path)
        if info is None:
            return None
        target = os.readlink(self.root.disk_path(path)) if os.path.islink(self.root.disk_path(path)) else None
        return entry_from_stat(path, info, target)

    def _apply(self, change: LocalChange) -> None:
        path = change.path
        if change.op is ChangeOp.PUT:
            self._put(change)
        elif change.op is ChangeOp.MKDIR:
            make_dir(self.root, path, mode=change.mode)
        elif change.op is ChangeOp.SYMLINK:
            made = make_symlink(self.root, path, change.target or "", expected=None)
            self._written[path] = made.stat_key()
        elif change.op is ChangeOp.DELETE:
            now = self._observe(path)
            if now is None and self._shown_stub(path, self._expected(change)) is not None:
                assert self.arena_id is not None
                remove_stub(self.root, path, self.arena_id)  # the push sends the delete
            elif now is not None:
                # Only the version the mount showed is deleted; an edit made in the folder meanwhile stays.
                expected = self._expected(change) or now.stat_key()
                self._written.pop(path, None)
                delete(self.root, path, expected=expected)
        elif change.op is ChangeOp.RENAME:
            src = change.from_path or ""
            now = self._observe(src)
            stub = self._shown_stub(src, change.base) if now is None else None
            if stub is not None:
                rename(self.root, stub_path(src), stub_path(path), expected=stub.stat_key())
                return  # a moved stub is a rename of its file: nothing is uploaded
            if now is None:
                raise StorageError(f"{src} is no longer in the arena folder; it cannot be moved")
            moved = rename(self.root, src, path, expected=now.stat_key())
            self._written.pop(src, None)
            self._written[path] = moved.stat_key()
        elif change.op is ChangeOp.META:
            if self.root.lstat(path) is None and self._shown_stub(path, change.base) is not None:
                raise StorageError(
                    f"{path} is online-only on this device; its mode and time change once it is local",
                    hint=f"run `shoal hydrate {path}` in the arena folder first",
                )
            disk = self.root.disk_path(path)
            try:
                os.chmod(disk, change.mode, follow_symlinks=False)
                os.utime(disk, ns=(change.mtime_ns, change.mtime_ns), follow_symlinks=False)
            except OSError as exc:
                raise StorageError(f"cannot change {path} in the arena folder: {exc.strerror}") from exc

    def _put(self, change: LocalChange) -> None:
        assert change.content is not None
        expected = self._expected(change)
        stub = self._shown_stub(change.path, expected)
        if stub is not None:
            expected = None  # online-only: the path itself is empty, its stub is beside it
        with AtomicFile(self.root, change.path) as out:
            with change.content.open("rb") as src:
                while block := src.read(_BLOCK):
                    out.write(block)
            try:
                written = out.commit(expected=expected, mode=change.mode)
            except ConflictError:
                # The folder's copy changed behind the mount: keep both, as the engine does.
                copy = conflict_copy_name(change.path, datetime.now(UTC), self.device_short)
                out.retarget(copy)
                written = out.commit(expected=None, mode=change.mode)
        self._written[written.path] = written.stat_key()
        if stub is not None and written.path == change.path:
            assert self.arena_id is not None
            remove_stub(self.root, change.path, self.arena_id)  # the file is local now: a plain edit
