"""A client workload for tests: a pod that connects to a Service when asked.

``python clientpod.py PORT`` listens on ``$POD_IP:PORT``; each request is one line
``HOST PORT COUNT`` (``$VARIABLE`` references in it are the pod's environment, so
``$TCP_ECHO_SERVICE_HOST $TCP_ECHO_SERVICE_PORT 10`` uses the variables the kubelet set),
and the reply is one JSON line: the first words of the replies of
COUNT connections (16 at a time) to HOST:PORT, each sending ``probe``, as
``{"one": 1600, "two": 400}``; a connection that fails counts under ``"error"``. The
connections leave from this pod, so the node proxy sees the pod's address.
"""

from __future__ import annotations

import json
import os
import socket
import socketserver
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor


def first_word(host: str, port: int) -> str:
    try:
        with socket.create_connection((host, port), timeout=10) as sock:
            sock.sendall(b"probe\n")
            sock.shutdown(socket.SHUT_WR)
            data = b""
            while chunk := sock.recv(4096):
                data += chunk
        return data.split(b" ", 1)[0].decode() or "closed"
    except OSError:
        return "error"


class Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        host, port, count = os.path.expandvars(self.rfile.readline().decode()).split()
        with ThreadPoolExecutor(16) as pool:
            words = Counter(pool.map(lambda _: first_word(host, int(port)), range(int(count))))
        self.wfile.write(json.dumps(dict(words)).encode() + b"\n")


def main() -> None:
    address = (os.environ["POD_IP"], int(sys.argv[1]))
    with socketserver.ThreadingTCPServer(address, Handler) as server:
        server.serve_forever()


if __name__ == "__main__":
    main()
