"""A real S3-API server on loopback for tests: moto's standalone server, in a thread.

Tests talk to it through s3fs exactly as to AWS (``endpoint_url`` + key/secret); nothing in
s3fs or botocore is mocked. ``require_auth(True)`` switches on moto's IAM checks (unknown
access keys are then refused with ``InvalidAccessKeyId``), through the server's own
``/moto-api/reset-auth`` endpoint.
"""

from __future__ import annotations

import logging
import os
import socket
import urllib.request
import uuid
from typing import Any

__all__ = ["S3Server", "free_port"]

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    """A loopback port nothing listens on (for 'unreachable endpoint' tests)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


class S3Server:
    """moto's ThreadedMotoServer on 127.0.0.1 with an OS-chosen port."""

    def __init__(self) -> None:
        self._server: Any = None
        self._saved_env: dict[str, str | None] = {}
        self.port = 0

    def start(self) -> S3Server:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no request log on stderr
        for k, v in CREDENTIALS.items():
            self._saved_env[k] = os.environ.get(k)
            os.environ[k] = v
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        self.port = int(self._server._server.server_port)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
        for k, v in self._saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def storage_options(self, **extra: Any) -> dict[str, Any]:
        return {"endpoint_url": self.endpoint, "key": "testing", "secret": "testing", **extra}

    def filesystem(self) -> Any:
        import s3fs

        return s3fs.S3FileSystem(**self.storage_options())

    def new_bucket(self) -> str:
        """Create a bucket with a fresh name; returns the name."""
        name = f"qpyr-{uuid.uuid4().hex[:12]}"
        self.filesystem().mkdir(name)
        return name

    def require_auth(self, on: bool) -> None:
        """Refuse (True) or accept (False) requests whose credentials moto's IAM does not know."""
        req = urllib.request.Request(f"{self.endpoint}/moto-api/reset-auth", data=b"0" if on else b"inf",
                                     method="POST", headers={"Content-Type": "text/plain"})
        with urllib.request.urlopen(req, timeout=10) as r:
            r.read()
