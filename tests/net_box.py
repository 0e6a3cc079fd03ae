"""Network test helpers: a real HTTP server on the host's loopback, and probes run from a box."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from agentlite.box.sandbox import SandboxRuntime

PROBE = (Path(__file__).parent / "net_probe.py").read_text()


@contextmanager
def host_http_server(body: bytes) -> Iterator[int]:
    """A real HTTP server on the host's 127.0.0.1 answering every GET with ``body``; yields its port."""

    class _Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


async def run_probes(rt: SandboxRuntime, box: str, probes: list[list[object]]) -> dict[str, str]:
    """Run net_probe.py in ``box`` over ``probes``; its result per probe, keyed by the probe's words."""
    proc = await rt.exec(box, [sys.executable, "-c", PROBE, json.dumps(probes)])
    out = b"".join([line async for line in proc.stdout_lines()])
    err = b"".join([line async for line in proc.stderr_lines()])
    assert await proc.wait() == 0, err.decode()
    return json.loads(out)
