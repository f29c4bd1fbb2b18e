"""The studio api in development: /health (alive), /ready (Postgres and Redis accept
connections on the compose network), / (the frontend). Standard library only."""
import json
import os
import socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FRONTEND = os.path.join(os.path.dirname(__file__), "..", "frontend", "index.html")
DEPENDENCIES = {"postgres": ("postgres", 5432), "redis": ("redis", 6379)}


def reachable(host, port):
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


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
            deps = {name: reachable(*addr) for name, addr in DEPENDENCIES.items()}
            return self.send(200 if all(deps.values()) else 503, deps)
        if self.path in ("/", "/index.html"):
            with open(FRONTEND, "rb") as f:
                return self.send(200, f.read(), "text/html; charset=utf-8")
        return self.send(404, {"error": "not found"})


if __name__ == "__main__":
    ThreadingHTTPServer(("0.0.0.0", 8000), Handler).serve_forever()
