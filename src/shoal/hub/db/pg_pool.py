"""PostgreSQL connections handed out by the pool are checked locally, not with a round trip.

SQLAlchemy's ``pool_pre_ping`` sends ``SELECT 1`` on every checkout: on a hub
whose requests each take a connection (the token check, a group of commits)
that was a round trip, and its share of the hub's CPU, per request. A server
that ended a connection (restart, ``pg_terminate_backend``, idle timeout) says
so before it closes the socket, and the socket then reads as ready: a
zero-timeout poll sees it. Such a connection is refused at checkout and the
pool opens a fresh one, so the request that follows a database restart still
succeeds. A connection that dies while checked out fails its statement as
before.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from psycopg import BaseConnection
from psycopg.pq import ConnStatus
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from shoal.net.sockets import fd_readable


def check_on_checkout(engine: AsyncEngine) -> None:
    """Refuse, at checkout, a pooled connection the server has already closed or written to."""
    event.listen(engine.sync_engine.pool, "checkout", _refuse_if_gone)


def is_gone(conn: BaseConnection[Any]) -> bool:
    """True when an idle connection is closed, broken, or has something unasked to read (a goodbye)."""
    return conn.closed or conn.pgconn.status != ConnStatus.OK or fd_readable(conn.pgconn.socket)


def _refuse_if_gone(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    driver = getattr(dbapi_connection, "driver_connection", None)
    if isinstance(driver, BaseConnection) and is_gone(driver):
        raise sa.exc.DisconnectionError("the database closed this pooled connection")
