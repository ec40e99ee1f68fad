"""A real S3-API server on loopback for tests: moto's standalone server, in a thread.

Tests talk to it through s3fs exactly as to AWS (``endpoint_url`` + key/secret); nothing in
s3fs or botocore is mocked. ``require_auth(True)`` switches on moto's IAM checks (unknown
access keys are then refused with ``InvalidAccessKeyId``), through the server's own
``/moto-api/reset-auth`` endpoint. ``fail_next(n)`` makes the server itself answer the next
``n`` GET requests with an S3 error (``503 SlowDown`` by default): transient failures injected
on the wire, for the retry tests.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
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


_REASONS = {500: "Internal Server Error", 503: "Service Unavailable", 403: "Forbidden"}


class FaultInjector:
    """WSGI middleware in front of moto: the next ``pending`` requests of ``method`` get an S3
    error document (``status``, ``code``) instead of reaching moto."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.lock = threading.Lock()
        self.pending = 0
        self.served = 0  # injected failures answered so far
        self.status, self.code, self.method = 503, "SlowDown", "GET"
        self.log: list[tuple[str, str]] = []  # (method, path) of every request that reached the server

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        with self.lock:
            self.log.append((str(environ.get("REQUEST_METHOD")), str(environ.get("PATH_INFO"))))
            hit = self.pending > 0 and environ.get("REQUEST_METHOD") == self.method
            if hit:
                self.pending -= 1
                self.served += 1
        if not hit:
            return self.app(environ, start_response)
        body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{self.code}</Code><Message>injected by '
                'the test server</Message><RequestId>qpyr-test</RequestId></Error>').encode()
        start_response(f"{self.status} {_REASONS.get(self.status, 'Error')}",
                       [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))])
        return [body]


class S3Server:
    """moto's ThreadedMotoServer on 127.0.0.1 with an OS-chosen port, behind a
    :class:`FaultInjector`."""

    def __init__(self) -> None:
        self._server: Any = None
        self.faults: FaultInjector | None = None
        self._saved_env: dict[str, str | None] = {}
        self.port = 0

    def start(self) -> S3Server:
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
        from moto.server import ThreadedMotoServer
        from werkzeug.serving import make_server

        owner = self

        class _Server(ThreadedMotoServer):  # type: ignore[misc]
            def _server_entry(self) -> None:  # moto's own, with the fault injector in front
                owner.faults = FaultInjector(DomainDispatcherApplication(create_backend_app))
                self._server = make_server(self._ip_address, self._port, owner.faults, True,
                                           request_handler=MotoRequestHandler)
                self._server_ready_event.set()
                self._server.serve_forever()

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no request log on stderr
        for k, v in CREDENTIALS.items():
            self._saved_env[k] = os.environ.get(k)
            os.environ[k] = v
        self._server = _Server(ip_address="127.0.0.1", port=0, verbose=False)
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

    def fail_next(self, n: int, status: int = 503, code: str = "SlowDown", method: str = "GET") -> None:
        """Answer the next ``n`` ``method`` requests with ``status``/``code`` (0 stops failing)."""
        assert self.faults is not None
        with self.faults.lock:
            self.faults.pending, self.faults.status, self.faults.code, self.faults.method = n, status, code, method
            self.faults.served = 0

    def gets(self, prefix: str) -> int:
        """GET requests the server received for keys starting with ``prefix`` (``/bucket/key...``)."""
        assert self.faults is not None
        with self.faults.lock:
            return sum(1 for m, p in self.faults.log if m == "GET" and p.startswith(prefix))

    @property
    def failures_served(self) -> int:
        assert self.faults is not None
        with self.faults.lock:
            return self.faults.served

    def require_auth(self, on: bool) -> None:
        """Refuse (True) or accept (False) requests whose credentials moto's IAM does not know."""
        req = urllib.request.Request(f"{self.endpoint}/moto-api/reset-auth", data=b"0" if on else b"inf",
                                     method="POST", headers={"Content-Type": "text/plain"})
        with urllib.request.urlopen(req, timeout=10) as r:
            r.read()


class S3ServerProcess:
    """moto's standalone server in a child process on 127.0.0.1, which a test can freeze
    (``SIGSTOP``: the port stays open, nothing answers) and thaw (``SIGCONT``)."""

    def __init__(self) -> None:
        self.proc: Any = None
        self.port = 0

    def start(self, timeout: float = 60.0) -> S3ServerProcess:
        import subprocess
        import sys
        import time

        self.port = free_port()
        env = dict(os.environ, **CREDENTIALS)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t_end = time.monotonic() + timeout
        while time.monotonic() < t_end:  # wait for the server to answer (bounded)
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto server exited with code {self.proc.returncode}")
            try:
                urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=1).close()
                return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"moto server did not answer within {timeout} s")

    def freeze(self) -> None:
        import signal

        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        import signal

        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None:
            self.thaw()
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def storage_options(self, **extra: Any) -> dict[str, Any]:
        return {"endpoint_url": self.endpoint, "key": "testing", "secret": "testing", **extra}
