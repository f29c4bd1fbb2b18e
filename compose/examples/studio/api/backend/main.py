"""The studio api in development. Standard library only.

  GET  /health        alive
  GET  /ready         Postgres and Redis accept connections on the compose network
  POST /api/hits      counts a hit in Redis (INCR over RESP) and returns the count
  GET  /              the frontend
"""
import json
import os
import socket
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FRONTEND = os.path.join(os.path.dirname(__file__), "..", "frontend", "index.html")


def address(url, default_port):
    u = urllib.parse.urlparse(url)
    return u.hostname, u.port or default_port


POSTGRES = address(os.environ.get("DATABASE_URL", "postgresql://postgres:5432/"), 5432)
REDIS = address(os.environ.get("REDIS_URL", "redis://redis:6379/0"), 6379)


def reachable(addr):
    try:
        with socket.create_connection(addr, timeout=2):
            return True
    except OSError:
        return False


def redis_command(*args):
    """One command over RESP; returns the integer or bulk reply."""
    payload = b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in (x.encode() for x in args))
    with socket.create_connection(REDIS, timeout=2) as s:
        s.sendall(payload)
        line = s.makefile("rb").readline().rstrip(b"\r\n")
    if line[:1] == b"-":
        raise OSError(line[1:].decode())
    return int(line[1:]) if line[:1] == b":" else line[1:].decode()


class Handler(BaseHTTPRequestHandler):
    def send(self, status, body, ctype="application/json"):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/health":
            return self.send(200, {"status": "ok", "environment": os.environ.get("ENVIRONMENT", "")})
        if self.path == "/ready":
            deps = {"postgres": reachable(POSTGRES), "redis": reachable(REDIS)}
            return self.send(200 if all(deps.values()) else 503, deps)
        if self.path in ("/", "/index.html"):
            with open(FRONTEND, "rb") as f:
                return self.send(200, f.read(), "text/html; charset=utf-8")
        return self.send(404, {"error": "not found"})

    def do_POST(self):
        if self.path == "/api/hits":
            try:
                return self.send(200, {"hits": redis_command("INCR", "hits")})
            except OSError as e:
                return self.send(503, {"error": str(e)})
        return self.send(404, {"error": "not found"})


if __name__ == "__main__":
    ThreadingHTTPServer(("0.0.0.0", 8000), Handler).serve_forever()
