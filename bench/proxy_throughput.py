"""Egress proxy throughput: the same client from inside a box (through the in-box bridge and the
host-side proxy) against the host directly, side by side in one run.

A real HTTP/1.1 server in its own process on the host's 127.0.0.1 serves a 100 MB body and a small
one. One client program (standard library only) runs twice per round, interleaved: on the host,
connecting directly, and in a sandbox box in ``allowlist`` mode (the server's ``127.0.0.1:PORT``
listed), tunnelling with HTTP ``CONNECT`` through ``127.0.0.1:3128`` as an HTTPS client would. It
times, inside the client (no process start-up counted):

* a 100 MB download;
* 1,000 small requests on one keep-alive connection (what HTTP clients such as the agent CLIs do);
* 1,000 small requests on a connection each (plain absolute-URI HTTP through the proxy), shown for
  information: it adds a proxy connection and a bridge fork per request.

Prints the median of the rounds for each path and the box/host ratios. Target: at most 1.3x for the
download and the keep-alive requests.

Run: ``.venv/bin/python bench/proxy_throughput.py [--rounds N]`` (default 3).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from agentlite.box.base import BoxSpec
from agentlite.box.boxnet import PROXY_PORT
from agentlite.box.sandbox import SandboxRuntime

BIG = 100 * 1000 * 1000
SMALL_REQUESTS = 1000
TARGET_RATIO = 1.3

SERVER = r"""
import asyncio, sys
BIG, CHUNK = int(sys.argv[1]), b"x" * (1 << 20)

async def handle(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            path = head.split(b" ", 2)[1]
            close = b"connection: close" in head.lower()
            if path.endswith(b"/big"):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % BIG)
                left = BIG
                while left:
                    piece = CHUNK[: min(left, len(CHUNK))]
                    writer.write(piece)
                    left -= len(piece)
                    await writer.drain()
            else:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
            if close:
                break
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    writer.close()

async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()

asyncio.run(main())
"""

CLIENT = r"""
import json, socket, sys, time
mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
proxy = ("127.0.0.1", int(sys.argv[4])) if mode == "proxy" else None

def read_reply(sock, buf):
    # Requests are strictly one after another, so nothing follows a reply's body.
    while b"\r\n\r\n" not in buf:
        buf += sock.recv(65536)
    head, _, body = buf.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    got = len(body)
    view = bytearray(1 << 20)
    while got < length:
        n = sock.recv_into(view)
        if not n:
            raise OSError("short body")
        got += n

def tunnel():
    if proxy is None:
        return socket.create_connection((host, port))
    sock = socket.create_connection(proxy)
    sock.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
    reply = b""
    while b"\r\n\r\n" not in reply:
        reply += sock.recv(4096)
    assert b" 200 " in reply.split(b"\r\n")[0], reply
    return sock

result = {}
sock = tunnel()
started = time.perf_counter()
sock.sendall(f"GET /big HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
read_reply(sock, b"")
result["download"] = time.perf_counter() - started
started = time.perf_counter()
for _ in range(int(sys.argv[5])):
    sock.sendall(f"GET /small HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    read_reply(sock, b"")
result["keepalive"] = time.perf_counter() - started
sock.close()
started = time.perf_counter()
for _ in range(int(sys.argv[5])):
    if proxy is None:
        s = socket.create_connection((host, port))
        s.sendall(f"GET /small HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    else:
        s = socket.create_connection(proxy)
        s.sendall(f"GET http://{host}:{port}/small HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
    read_reply(s, b"")
    s.close()
result["per_connection"] = time.perf_counter() - started
print(json.dumps(result))
"""

ROWS = (
    ("download", "100 MB download"),
    ("keepalive", f"{SMALL_REQUESTS} small, keep-alive"),
    ("per_connection", f"{SMALL_REQUESTS} small, conn each"),
)


async def from_host(port: int) -> dict[str, float]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CLIENT, "direct", "127.0.0.1", str(port), "0", str(SMALL_REQUESTS),
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"host client exited {proc.returncode}")
    return json.loads(out)


async def from_box(runtime: SandboxRuntime, box: str, port: int) -> dict[str, float]:
    argv = [
        sys.executable,
        "-c",
        CLIENT,
        "proxy",
        "127.0.0.1",
        str(port),
        str(PROXY_PORT),
        str(SMALL_REQUESTS),
    ]
    proc = await runtime.exec(box, argv)
    out = b"".join([line async for line in proc.stdout_lines()])
    err = b"".join([line async for line in proc.stderr_lines()])
    if await proc.wait() != 0:
        raise RuntimeError(f"box client failed: {err.decode()[-500:]}")
    return json.loads(out)


async def run(rounds: int, port: int) -> int:
    home = Path(tempfile.mkdtemp(prefix="agentlite-bench-proxy-"))
    runtime = SandboxRuntime(home)
    box = "agentlite-bench-proxy"
    samples: dict[str, list[dict[str, float]]] = {"host": [], "box": []}
    try:
        await runtime.create(box, BoxSpec(network_mode="allowlist", allow_net=[f"127.0.0.1:{port}"]))
        await from_box(runtime, box, port)  # warm-up, untimed
        await from_host(port)
        for round_no in range(rounds):
            # Alternate which path goes first, so neither always runs right after the other.
            order = [("host", from_host(port)), ("box", from_box(runtime, box, port))]
            for label, measure in order if round_no % 2 == 0 else reversed(order):
                samples[label].append(await measure)
    finally:
        if await runtime.get(box) is not None:
            await runtime.remove(box, force=True)
        await runtime.aclose()
        shutil.rmtree(home, ignore_errors=True)

    print(f"egress proxy: {rounds} interleaved rounds per path, medians (1 warm-up round each, untimed)")
    print(f"{'measure':<28}{'host s':>10}{'box s':>10}{'box/host':>10}")
    verdicts = []
    for key, label in ROWS:
        host = statistics.median(s[key] for s in samples["host"])
        inbox = statistics.median(s[key] for s in samples["box"])
        ratio = inbox / host
        print(f"{label:<28}{host:>10.3f}{inbox:>10.3f}{ratio:>9.2f}x")
        if key != "per_connection":
            verdicts.append((label, ratio))
    rate = BIG / statistics.median(s["download"] for s in samples["box"]) / 1e6
    print(f"download through the proxy: {rate:.0f} MB/s")
    for label, ratio in verdicts:
        verdict = "PASS" if ratio <= TARGET_RATIO else "MISS"
        print(f"target: {label} <= {TARGET_RATIO:.1f}x host -> {verdict} ({ratio:.2f}x)")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description="Egress proxy throughput: from a box vs from the host.")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per path (>= 1)")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    # The server is its own process, so it never shares an interpreter with either client's timing.
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(BIG)], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        return asyncio.run(run(args.rounds, port))
    finally:
        server.kill()
        server.wait()
        if server.stdout is not None:
            server.stdout.close()


if __name__ == "__main__":
    sys.exit(main())
