"""A local image host on 127.0.0.1: serves files from one blob (bytes + offsets) so img2dataset can fetch them.

`serve_blob(blob, index)` runs a threaded http.server in a background thread and returns it; paths not in the
index answer 404, as a dead link on the web does. Use as a context manager.
"""
from __future__ import annotations

import mmap
import os
import threading
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CONTENT_TYPES = {"jpg": "image/jpeg", "jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # img2dataset opens many connections at once


class BlobServer:
    """Serve `routes` {url path: (offset, length)} out of the file `blob` on 127.0.0.1:`port` (0 = any free).

    `delay_s` makes every answer wait that long, like a slow host.
    """

    def __init__(self, blob: str | os.PathLike, routes: Mapping[str, tuple[int, int]], port: int = 0,
                 delay_s: float = 0.0):
        self._file = open(blob, "rb")
        size = os.fstat(self._file.fileno()).st_size
        self._mm = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
        self.routes = routes
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def do_GET(self):  # http.server's name
                if delay_s:
                    time.sleep(delay_s)  # a slow host (tests interrupt a download mid-way)
                hit = server.routes.get(self.path)
                if hit is None:
                    self.send_error(404, "Not Found")
                    return
                off, n = hit
                ext = self.path.rsplit(".", 1)[-1].lower()
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPES.get(ext, "application/octet-stream"))
                self.send_header("Content-Length", str(n))
                self.end_headers()
                self.wfile.write(server._mm[off : off + n])

            def log_message(self, *args):  # quiet
                pass

        self.httpd = _Server(("127.0.0.1", port), Handler)
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> BlobServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if isinstance(self._mm, mmap.mmap):
            self._mm.close()
        self._file.close()

    def __enter__(self) -> BlobServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


def write_blob(path: str | os.PathLike, files: list[bytes]) -> list[tuple[int, int]]:
    """Concatenate `files` into one blob at `path` (atomically); their (offset, length)."""
    from ..atomic import atomic_open

    spans, off = [], 0
    with atomic_open(path, "wb") as f:
        for data in files:
            f.write(data)
            spans.append((off, len(data)))
            off += len(data)
    return spans


def try_port(port: int) -> bool:
    """True when 127.0.0.1:`port` can be bound now."""
    import socket

    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as http.server binds: TIME_WAIT is fine
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False
