#!/usr/bin/env python3
"""Bytes of one hub broadcast as a session receives it (input of bench/scaling_model.py).

Starts `conduit serve` (temp data dir, free port), creates a virtual key, opens ONE SignalR
WebSocket session on /hubs/notifications with a plain socket (negotiate, upgrade, JSON handshake),
sends the same SystemAnnouncement the benchmarks send (`conduit-loadgen hub-announce`, message
`bench:<ns>`), and prints one JSON line with the received WebSocket frame and the bytes one
delivery takes on an Ethernet link (frame + TCP/IPv4 headers with the timestamp option +
Ethernet header; the client's ACK separately).

    bench/hub_frame_probe.py [BIN_DIR]      (default build/snap)
"""

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = sys.argv[1] if len(sys.argv) > 1 else "build/snap"
BIN = BIN if os.path.isabs(BIN) else os.path.join(ROOT, BIN)
MASTER = "bench-master-key-0123456789abcdef"
TCP_IP = 20 + 20 + 12  # IPv4 + TCP + timestamp option (Linux default)
ETH = 14


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def admin(port, path, body):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
                                 headers={"X-API-Key": MASTER, "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def recv_until(s, buf, n):
    while len(buf) < n:
        chunk = s.recv(65536)
        if not chunk:
            raise RuntimeError("connection closed")
        buf += chunk
    return buf


def main():
    data = tempfile.mkdtemp(prefix="conduit-frame-probe.")
    port = free_port()
    env = dict(os.environ, CONDUIT_MASTER_KEY=MASTER)
    proc = subprocess.Popen([os.path.join(BIN, "conduit"), "serve", "--listen", f"127.0.0.1:{port}",
                             "--threads", "1", "--data-dir", data, "--log-level", "warn"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health/live", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        group = admin(port, "/api/VirtualKeyGroups", {"groupName": "probe", "initialBalance": 1})["id"]
        key = admin(port, "/api/VirtualKeys", {"keyName": "probe", "virtualKeyGroupId": group})["virtualKey"]
        token = None
        for _ in range(50):  # the configuration is applied within about a second
            req = urllib.request.Request(
                f"http://127.0.0.1:{port}/hubs/notifications/negotiate?negotiateVersion=1", data=b"",
                headers={"Authorization": f"Bearer {key}"})
            try:
                with urllib.request.urlopen(req, timeout=5) as r:
                    token = json.loads(r.read())["connectionToken"]
                    break
            except OSError:
                time.sleep(0.1)
        if token is None:
            sys.exit("negotiate failed")
        s = socket.create_connection(("127.0.0.1", port))
        wskey = base64.b64encode(os.urandom(16)).decode()
        s.sendall((f"GET /hubs/notifications?id={token} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                   f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {wskey}\r\n"
                   f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {key}\r\n\r\n").encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf = recv_until(s, buf, len(buf) + 1)
        head, buf = buf.split(b"\r\n\r\n", 1)
        if b" 101 " not in head.split(b"\r\n")[0]:
            sys.exit(f"upgrade refused: {head[:80]!r}")
        hs = b'{"protocol":"json","version":1}\x1e'
        mask = os.urandom(4)
        s.sendall(bytes([0x81, 0x80 | len(hs)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(hs)))
        time.sleep(0.3)
        subprocess.run([os.path.join(BIN, "conduit-loadgen"), "hub-announce", "--count", "1", "--url",
                        f"http://127.0.0.1:{port}/api/notifications/announcements", "--header",
                        f"X-API-Key: {MASTER}"], check=True, stdout=subprocess.DEVNULL)
        s.settimeout(10)
        while True:
            buf = recv_until(s, buf, 2)
            n, off = buf[1] & 0x7F, 2
            if n == 126:
                buf = recv_until(s, buf, 4)
                n, off = int.from_bytes(buf[2:4], "big"), 4
            buf = recv_until(s, buf, off + n)
            payload, frame = buf[off:off + n], off + n
            buf = buf[off + n:]
            if b"SystemAnnouncement" in payload:
                break
        print(json.dumps({"probe": "frame", "record": payload.decode(), "record_bytes": n,
                          "frame_bytes": frame, "tcp_ip_header_bytes": TCP_IP, "ethernet_header_bytes": ETH,
                          "wire_bytes_per_delivery": frame + TCP_IP + ETH,
                          "ack_bytes": TCP_IP + ETH}))
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
