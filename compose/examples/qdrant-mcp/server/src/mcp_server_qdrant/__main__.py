"""An MCP server for Qdrant (seed 004's service), small enough to read: Streamable-HTTP-style
JSON-RPC at POST /mcp with two tools, `qdrant-store` and `qdrant-find`, and GET /health for the
container's health check. Configured only through the environment:

  QDRANT_URL        where Qdrant is (http://qdrant:6333)
  QDRANT_API_KEY    sent as the api-key header when set
  COLLECTION_NAME   the collection memories go to (created on first store)
  EMBEDDING_MODEL   name recorded with each point; the vectors come from a hashing embedder
                    standing in for fastembed (no model download in this example)
  FASTMCP_HOST, FASTMCP_PORT   where it listens (0.0.0.0:8000)

Standard library only; stops cleanly on SIGTERM (docker stop)."""
import hashlib
import json
import math
import os
import signal
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

QDRANT = os.environ.get("QDRANT_URL", "http://qdrant:6333").rstrip("/")
API_KEY = os.environ.get("QDRANT_API_KEY", "")
COLLECTION = os.environ.get("COLLECTION_NAME", "memories")
MODEL = os.environ.get("EMBEDDING_MODEL", "hashing-64")
DIM = 64
PROTOCOL = "2025-11-25"
TOOLS = [
    {"name": "qdrant-store", "description": "Keep a memory in Qdrant.",
     "inputSchema": {"type": "object", "properties": {"information": {"type": "string"}, "metadata": {"type": "object"}}, "required": ["information"]}},
    {"name": "qdrant-find", "description": "Find memories similar to a query.",
     "inputSchema": {"type": "object", "properties": {"query": {"type": "string"}, "limit": {"type": "integer"}}, "required": ["query"]}},
]


def embed(text):
    v = [0.0] * DIM
    for word in text.lower().split():
        h = hashlib.sha256(word.encode()).digest()
        v[h[0] % DIM] += 1.0 if h[1] % 2 else -1.0
    n = math.sqrt(sum(x * x for x in v)) or 1.0
    return [x / n for x in v]


def qdrant(method, path, body=None):
    headers = {"Content-Type": "application/json"}
    if API_KEY:
        headers["api-key"] = API_KEY
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(QDRANT + path, data=data, method=method, headers=headers)
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.load(r) if r.headers.get("Content-Type", "").startswith("application/json") else r.read().decode()


def ensure_collection():
    try:
        qdrant("GET", "/collections/" + COLLECTION)
    except urllib.error.HTTPError as e:
        if e.code != 404:
            raise
        qdrant("PUT", "/collections/" + COLLECTION, {"vectors": {"size": DIM, "distance": "Cosine"}})


def store(args):
    text = str(args["information"])
    ensure_collection()
    point_id = int(hashlib.sha256(text.encode()).hexdigest()[:12], 16)
    payload = {"document": text, "metadata": args.get("metadata") or {}, "model": MODEL}
    qdrant("PUT", "/collections/%s/points" % COLLECTION, {"points": [{"id": point_id, "vector": embed(text), "payload": payload}]})
    return "Remembered: %s" % text


def find(args):
    try:
        hits = qdrant("POST", "/collections/%s/points/search" % COLLECTION,
                      {"vector": embed(str(args["query"])), "limit": int(args.get("limit", 5)), "with_payload": True})["result"]
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return []
        raise
    return [h["payload"]["document"] for h in hits]


def rpc(msg):
    method, params = msg.get("method"), msg.get("params") or {}
    if method == "initialize":
        return {"protocolVersion": PROTOCOL, "capabilities": {"tools": {}}, "serverInfo": {"name": "mcp-server-qdrant", "version": "0.1.0"}}
    if method == "tools/list":
        return {"tools": TOOLS}
    if method == "tools/call":
        name, args = params.get("name"), params.get("arguments") or {}
        try:
            if name == "qdrant-store":
                return {"content": [{"type": "text", "text": store(args)}], "isError": False}
            if name == "qdrant-find":
                found = find(args)
                return {"content": [{"type": "text", "text": t} for t in found], "structuredContent": {"results": found}, "isError": False}
        except (KeyError, OSError, ValueError) as e:
            return {"content": [{"type": "text", "text": "error: %s" % e}], "isError": True}
        raise LookupError("unknown tool %s" % name)
    raise LookupError("unknown method %s" % method)


class Handler(BaseHTTPRequestHandler):
    def send(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/health":
            try:
                qdrant("GET", "/readyz")
                return self.send(200, {"status": "ok", "qdrant": QDRANT, "collection": COLLECTION})
            except OSError as e:
                return self.send(503, {"status": "qdrant unreachable", "error": str(e)})
        return self.send(404, {"error": "not found"})

    def do_POST(self):
        if self.path != "/mcp":
            return self.send(404, {"error": "not found"})
        try:
            msg = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        except ValueError:
            return self.send(400, {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "parse error"}})
        if "id" not in msg:
            self.send_response(202)
            self.end_headers()
            return None
        try:
            return self.send(200, {"jsonrpc": "2.0", "id": msg["id"], "result": rpc(msg)})
        except LookupError as e:
            return self.send(200, {"jsonrpc": "2.0", "id": msg["id"], "error": {"code": -32601, "message": str(e)}})


def main():
    host, port = os.environ.get("FASTMCP_HOST", "0.0.0.0"), int(os.environ.get("FASTMCP_PORT", "8000"))
    server = ThreadingHTTPServer((host, port), Handler)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print("mcp-server-qdrant listening on %s:%d, Qdrant at %s, collection %s" % (host, port, QDRANT, COLLECTION), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
