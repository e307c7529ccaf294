"""FastCDC over a file that arrives piece by piece, with exactly the cut points of cutting it whole.

FastCDC decides a cut from the bytes since the chunk's start alone, and a
cut found before the end of the available data is final: more data after it
cannot move it. Only the last chunk of what has arrived may still grow, so
it is carried over and cut again with the next piece. Feeding a file in any
split therefore yields the same chunks, and the same manifest, as
``iter_chunks`` over the whole file.
"""

from __future__ import annotations

from concurrent.futures import Executor

from shoal.chunking.chunker import make_chunker
from shoal.chunking.envelope import encode_plain
from shoal.chunking.hashing import FileHasher, chunk_id
from shoal.model.ids import ChunkId
from shoal.model.manifest import ChunkRef, Manifest
from shoal.settings import ChunkingSettings

Encoded = tuple[ChunkId, int, bytes]  # id, plaintext length, plain envelope


def _encode(piece: memoryview) -> Encoded:
    return chunk_id(piece), len(piece), encode_plain(piece)


class Cutter:
    """Cuts, hashes and encodes a plain file fed in order; not for use by two threads at once."""

    def __init__(self) -> None:
        self._chunker = make_chunker(ChunkingSettings())
        self._hasher = FileHasher()
        self._carry = b""
        self._refs: list[ChunkRef] = []
        self.fed = 0  # bytes fed so far

    @property
    def carried(self) -> int:
        return len(self._carry)

    def buffer(self, size: int) -> tuple[bytearray, memoryview]:
        """A buffer holding the carried bytes, then room for the next ``size`` bytes (the view)."""
        buf = bytearray(len(self._carry) + size)
        buf[: len(self._carry)] = self._carry
        return buf, memoryview(buf)[len(self._carry) :]

    def feed(self, buf: bytearray, pool: Executor) -> list[Encoded]:
        """Take ``buf`` from ``buffer`` once filled; return the chunks it completes, encoded."""
        view = memoryview(buf)
        fresh = view[len(self._carry) :]
        hashed = pool.submit(self._hasher.update, fresh)
        pieces = [chunk.data for chunk in self._chunker.cut_buf(view)]
        done = list(pool.map(_encode, pieces[:-1]))
        hashed.result()
        self._carry = bytes(pieces[-1]) if pieces else b""
        self.fed += len(fresh)
        self._refs.extend(ChunkRef(cid, length) for cid, length, _ in done)
        return done

    def finish(self, pool: Executor) -> tuple[list[Encoded], Manifest]:
        """The last chunks (the carried bytes cut as the end of the file) and the file's manifest."""
        tail = memoryview(self._carry)
        done = list(pool.map(_encode, [chunk.data for chunk in self._chunker.cut_buf(tail)]))
        self._carry = b""
        self._refs.extend(ChunkRef(cid, length) for cid, length, _ in done)
        refs = tuple(self._refs)
        return done, Manifest(size=sum(r.length for r in refs), chunks=refs, file_hash=self._hasher.digest())
