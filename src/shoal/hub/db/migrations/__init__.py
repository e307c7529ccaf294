"""Numbered schema migrations: ``mNNNN_name.py`` modules with ``VERSION`` and ``upgrade(conn)``.

Each runs once, in one transaction together with its row in
``schema_migrations``. A migration never imports ``schema``: it describes
the tables as they were when it was written, so old databases upgrade the
same way forever.
"""
