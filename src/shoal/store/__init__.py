"""shoal.store: blob stores (local directory, S3) behind one interface, opened by URL.

``open_blob_store(url)`` is the entry point; ``shoal.store.sealed`` wraps any of them.
"""

from shoal.store.base import BlobStore
from shoal.store.file import FileBlobStore
from shoal.store.s3 import S3BlobStore
from shoal.store.url import open_blob_store

__all__ = ["BlobStore", "FileBlobStore", "S3BlobStore", "open_blob_store"]
