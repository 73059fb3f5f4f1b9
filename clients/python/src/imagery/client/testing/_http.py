"""The fake's storage and CDN, over HTTP: upload URLs take a PUT that carries exactly the
signed headers (as S3 checks a presigned PUT), and variant URLs serve the uploaded bytes while
their signature and expiry hold (the fake re-encodes nothing)."""

from __future__ import annotations

import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from imagery.client.testing._store import Store

_TYPES = {"webp": "image/webp", "jpg": "image/jpeg", "png": "image/png"}


class _Handler(BaseHTTPRequestHandler):
    server: _StorageServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass  # a test's output is not the place for an access log

    def _answer(self, status: int, body: bytes = b"", content_type: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if status == 200 and content_type.startswith("image/"):
            self.send_header("Cache-Control", "public, max-age=31536000, immutable")
        self.end_headers()
        self.wfile.write(body)

    def do_PUT(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        if self.headers.get("Transfer-Encoding") or self.headers.get("Content-Length") is None:
            self._answer(411, b"MissingContentLength")
            return
        body = self.rfile.read(int(self.headers["Content-Length"]))
        parts = url.path.split("/")
        if len(parts) != 3 or parts[1] != "uploads":
            self._answer(403, b"AccessDenied")
            return
        token = urllib.parse.parse_qs(url.query).get("X-Fake-Signature", [""])[0]
        headers = {k: v for k, v in self.headers.items()}
        refusal = self.server.store.receive(parts[2], token, headers, body)
        if refusal:
            status, _, text = refusal.partition(" ")
            self._answer(int(status), text.encode())
        else:
            self._answer(200)

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        parts = url.path.split("/")  # /variants/{sha256}/{name}.{ext}
        try:
            expires = int(query["Expires"][0])
            signature = query["Signature"][0]
        except (KeyError, ValueError):
            self._answer(403, b"AccessDenied")
            return
        store = self.server.store
        if (
            len(parts) != 4
            or parts[1] != "variants"
            or signature != store.signature(url.path, expires)
            or expires < time.time()
        ):
            self._answer(403, b"AccessDenied")
            return
        body = store.served(parts[2])
        extension = parts[3].rpartition(".")[2]
        if body is None:
            self._answer(404, b"NoSuchKey")
        else:
            self._answer(200, body, _TYPES.get(extension, "application/octet-stream"))


class _StorageServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, store: Store) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.store = store


class Storage:
    """The HTTP side, on a port of its own, in a thread of its own."""

    def __init__(self, store: Store) -> None:
        self._server = _StorageServer(store)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="fake-imagery-http", daemon=True
        )

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
