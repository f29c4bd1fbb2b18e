"""Open WebUI stand-in: /health, /ollama/<path> passed through to OLLAMA_BASE_URL, and a
settings file in the data volume. Standard library only."""
import json
import os
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DATA = "/app/backend/data"
OLLAMA = os.environ.get("OLLAMA_BASE_URL", "http://ollama:11434").rstrip("/")


class Handler(BaseHTTPRequestHandler):
    def send(self, status, data, ctype="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/health":
            return self.send(200, json.dumps({"status": True}).encode())
        if self.path.startswith("/ollama/"):
            try:
                with urllib.request.urlopen(OLLAMA + self.path[len("/ollama"):], timeout=5) as r:
                    return self.send(r.status, r.read())
            except (urllib.error.URLError, OSError) as e:
                return self.send(502, json.dumps({"detail": "Ollama unreachable: %s" % e}).encode())
        if self.path == "/":
            return self.send(200, b"<!doctype html><title>Open WebUI</title><h1>Open WebUI</h1>", "text/html")
        return self.send(404, json.dumps({"detail": "Not Found"}).encode())


if __name__ == "__main__":
    os.makedirs(DATA, exist_ok=True)
    settings = os.path.join(DATA, "config.json")
    if not os.path.exists(settings):
        with open(settings, "w") as f:
            json.dump({"ollama": {"base_urls": [OLLAMA]}}, f)
    ThreadingHTTPServer(("0.0.0.0", int(os.environ.get("PORT", "8080"))), Handler).serve_forever()
