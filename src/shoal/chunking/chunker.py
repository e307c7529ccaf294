"""Content-defined chunking (FastCDC 2020, via pyfastcdc) of streams and buffers.

A stream is read in bounded memory whatever its size: pyfastcdc keeps one
buffer of about twice the maximum chunk size. A stream shorter than the
minimum is one chunk; an empty stream yields none. In encrypted arenas
``ChunkingSettings.seed`` comes from the arena key, so cut points do not
fingerprint content.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO, Protocol

from pyfastcdc import FastCDC

from shoal.errors import ConfigError
from shoal.settings import ChunkingSettings

SEED_MAX = 2**63 - 1  # pyfastcdc shifts the seed left into a uint64; 0 means its default gear table


def make_chunker(settings: ChunkingSettings) -> FastCDC:
    """A FastCDC instance for ``settings``; not safe to share between threads while cutting."""
    if not 0 <= settings.seed <= SEED_MAX:
        raise ConfigError(f"chunking seed {settings.seed} is outside 0..2**63-1")
    try:
        return FastCDC(
            settings.avg_size,
            min_size=settings.min_size,
            max_size=settings.max_size,
            seed=settings.seed,
        )
    except ValueError as exc:
        raise ConfigError(f"invalid chunk sizes: {exc}") from exc


def iter_chunks(stream: BinaryIO, settings: ChunkingSettings) -> Iterator[bytes]:
    """Yield the chunks of ``stream`` in order, each an independent ``bytes``."""
    for chunk in make_chunker(settings).cut_stream(stream):
        # pyfastcdc reuses its buffer: the view dies at the next chunk, so copy it out now.
        yield bytes(chunk.data)


def iter_chunks_buf(buf: bytes | bytearray | memoryview, settings: ChunkingSettings) -> Iterator[memoryview]:
    """Yield views into ``buf``, one per chunk; they stay valid as long as ``buf`` does."""
    for chunk in make_chunker(settings).cut_buf(buf):
        yield chunk.data


class Readable(Protocol):
    def readinto(self, buffer: bytearray | memoryview, /) -> int | None: ...


class BlockChunker:
    """Cut a stream a block at a time, handing out each chunk as a view into its block.

    :func:`iter_chunks` copies every chunk out of pyfastcdc's reused buffer:
    a second memory pass over the whole file, under the GIL. Here each block
    is a fresh buffer that the views keep alive, and only the chunk that the
    block's end may have cut short is copied, to start the next block. The
    cut points are :func:`iter_chunks`' own: FastCDC decides each cut from
    the bytes after the previous one alone.
    """

    def __init__(self, stream: Readable, settings: ChunkingSettings) -> None:
        self._stream = stream
        self._chunker = make_chunker(settings)
        self._max = settings.max_size
        self._tail = b""
        self._eof = False

    def next_block(self, size: int) -> list[memoryview]:
        """The chunks of about the next ``size`` bytes, in order; [] at the end of the stream.

        A block holds the carried tail plus ``size`` bytes read (more than one maximal chunk in
        all, so every block but the last hands out at least one chunk).
        """
        if self._eof and not self._tail:
            return []
        block = bytearray(len(self._tail) + max(size, self._max + 1))
        view = memoryview(block)
        view[: len(self._tail)] = self._tail
        filled = len(self._tail)
        while filled < len(block) and not self._eof:
            got = self._stream.readinto(view[filled:])
            if not got:
                self._eof = True
            else:
                filled += got
        chunks = [chunk.data for chunk in self._chunker.cut_buf(view[:filled])]
        self._tail = b""
        if not self._eof and chunks:
            self._tail = bytes(chunks.pop())  # the block's end may have cut it short: cut it again
        return chunks
