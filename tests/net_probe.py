"""Run inside a box (``python -c <this file's text> '<json list of probes>'``): tries each way of
reaching a target and prints one JSON object, probe name -> ``ok: <first reply line>`` or
``error: <why>``. Standard library only: it runs on the host's Python inside the box."""

import json
import socket
import struct
import sys

TIMEOUT = 5.0


def _read_until(sock: socket.socket, end: bytes) -> bytes:
    """What the peer sends until ``end`` has come (or it closes)."""
    data = b""
    while end not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def _first_line(sock: socket.socket) -> str:
    return _read_until(sock, b"\r\n").split(b"\r\n", 1)[0].decode("latin-1")


def _get(sock: socket.socket, host: str) -> str:
    sock.sendall(f"GET / HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
    return _first_line(sock)


def direct(host: str, port: int) -> str:
    with socket.create_connection((host, port), TIMEOUT) as sock:
        return _get(sock, host)


def via_connect(proxy: int, host: str, port: int) -> str:
    with socket.create_connection(("127.0.0.1", proxy), TIMEOUT) as sock:
        sock.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
        reply = _read_until(sock, b"\r\n\r\n")  # the whole CONNECT answer, before the tunnel's bytes
        status = reply.split(b"\r\n", 1)[0].decode("latin-1")
        if " 200 " not in status:
            return "refused: " + status
        return _get(sock, host)


def via_http(proxy: int, host: str, port: int) -> str:
    with socket.create_connection(("127.0.0.1", proxy), TIMEOUT) as sock:
        sock.sendall(f"GET http://{host}:{port}/ HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
        line = _first_line(sock)
        return ("refused: " + line) if " 403 " in line else line


def via_socks(proxy: int, host: str, port: int) -> str:
    with socket.create_connection(("127.0.0.1", proxy), TIMEOUT) as sock:
        sock.sendall(b"\x05\x01\x00")
        if sock.recv(2) != b"\x05\x00":
            return "error: no socks greeting"
        name = host.encode()
        sock.sendall(b"\x05\x01\x00\x03" + bytes([len(name)]) + name + struct.pack("!H", port))
        reply = sock.recv(10)
        if reply[1] != 0:
            return f"refused: socks code {reply[1]}"
        return _get(sock, host)


def abstract_unix(name: str, _port: int) -> str:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(TIMEOUT)
        sock.connect("\0" + name)
        return _get(sock, name)


KINDS = {"direct": direct, "connect": via_connect, "http": via_http, "socks": via_socks}


def main() -> None:
    results = {}
    for probe in json.loads(sys.argv[1]):
        kind, args = probe[0], probe[1:]
        key = " ".join(str(a) for a in probe)
        try:
            if kind == "abstract":
                results[key] = "ok: " + abstract_unix(*args)
            else:
                line = KINDS[kind](*args)
                results[key] = line if line.startswith("refused") else "ok: " + line
        except OSError as exc:
            results[key] = f"error: {exc}"
    print(json.dumps(results))


main()
