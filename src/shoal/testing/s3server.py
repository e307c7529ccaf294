"""An S3 endpoint for tests: moto's threaded server on 127.0.0.1, one fresh bucket per test.

    from shoal.testing.s3server import s3_server, s3_url  # in a conftest.py

``s3_server`` (session scope) starts one server; ``s3_url`` (function scope) creates a new
bucket and returns an ``s3://`` URL with the endpoint and test credentials in it.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlencode

import pytest
from moto.server import ThreadedMotoServer

TEST_REGION = "us-east-1"
TEST_ACCESS_KEY = "shoal-test-key"
TEST_SECRET_KEY = "shoal-test-secret"  # noqa: S105 - moto accepts any credentials


@dataclass(frozen=True)
class S3TestServer:
    endpoint: str

    def create_bucket(self, name: str | None = None) -> str:
        """Create a bucket (a fresh random name unless given) and return its name."""
        bucket = name or f"shoal-{uuid.uuid4().hex[:20]}"
        host, port = self.endpoint.removeprefix("http://").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        try:
            connection.request("PUT", f"/{bucket}")
            status = connection.getresponse().status
        finally:
            connection.close()
        if status != 200:
            raise RuntimeError(f"moto refused to create bucket {bucket}: HTTP {status}")
        return bucket

    def url(self, bucket: str, prefix: str = "", *, credentials: bool = True) -> str:
        """An ``s3://`` URL for ``bucket`` on this server."""
        query = {"endpoint": self.endpoint, "region": TEST_REGION}
        if credentials:
            query |= {"access_key_id": TEST_ACCESS_KEY, "secret_access_key": TEST_SECRET_KEY}
        path = f"/{prefix}" if prefix else ""
        return f"s3://{bucket}{path}?{urlencode(query)}"


@contextlib.contextmanager
def running_s3_server() -> Iterator[S3TestServer]:
    """Run moto on a free port of 127.0.0.1 for the duration of the block."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield S3TestServer(endpoint=f"http://{host}:{port}")
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3TestServer]:
    with running_s3_server() as server:
        yield server


@pytest.fixture
def s3_url(s3_server: S3TestServer) -> str:
    """A URL of an empty bucket of its own for each test."""
    return s3_server.url(s3_server.create_bucket())
