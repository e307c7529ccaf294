"""The hub's metadata database: SQLAlchemy Core on SQLite (embedded) or PostgreSQL."""
