#!/usr/bin/env python3
"""Copy or zero-copy? The sender behind the 64 MiB question in RESULTS.md ("Would sending from a
file (sendfile) close the 64 MiB gap?"). It answers every request on 127.0.0.1:PORT with the
bytes of FILE, one thread per connection, with the same unsent-bytes limit as Shoal, either
copied from memory (`sendall`) or sent from a memfd (`os.sendfile`). It reads a request only
up to its blank line and ignores what it asked for: a probe of sending, not an HTTP server.

Usage: bench/zero_copy_probe.py copy|sendfile PORT FILE
Then, alternating with the servers under test (bench/run.sh writes the wrk script and the files):
    wrk -t2 -c10 -d10s --latency -s /tmp/shoal-bench/paced-150.lua http://127.0.0.1:PORT/x
"""
import os
import socket
import sys
import threading


def main():
    mode, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    body = open(path, "rb").read()
    memfd = os.memfd_create("object")
    written = 0
    while written < len(body):
        written += os.write(memfd, body[written:])
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nContent-Type: application/octet-stream\r\n\r\n" % len(body)

    def send_body(client):
        if mode == "copy":
            client.sendall(memoryview(body))
            return
        offset = 0
        while offset < len(body):
            offset += os.sendfile(client.fileno(), memfd, offset, len(body) - offset)

    def serve(client):
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT, 512 * 1024)
        pending = b""
        while True:
            received = client.recv(65536)
            if not received:
                return
            pending += received
            while b"\r\n\r\n" in pending:
                _, pending = pending.split(b"\r\n\r\n", 1)
                client.sendall(head)
                send_body(client)

    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(128)
    while True:
        client, _ = listener.accept()
        threading.Thread(target=serve, args=(client,), daemon=True).start()


if __name__ == "__main__":
    main()
