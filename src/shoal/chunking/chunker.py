"""Content-defined chunking (FastCDC 2020, via pyfastcdc) of streams and buffers.

A stream is read in bounded memory whatever its size: pyfastcdc keeps one
buffer of about twice the maximum chunk size. A stream shorter than the
minimum is one chunk; an empty stream yields none. In encrypted arenas
``ChunkingSettings.seed`` comes from the arena key, so cut points do not
fingerprint content.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

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
