"""shoal.store: blob stores (local directory, S3) behind one interface, opened by URL.

``shoal.store.url.open_blob_store(url)`` is the entry point; ``shoal.store.sealed`` wraps any of
them. This package imports none of its modules, so a command using only ``file://`` stores never
loads the S3 client.
"""
