"""mcp-core: Liv Hana's MCP server. JSON-RPC at POST /mcp (initialize, tools/list, tools/call)
with a small memory kept in /data (a named volume) and generation through the host's native
Ollama (OLLAMA_BASE_URL, http://host.docker.internal:11434 on apple-metal). GET /health answers
while the server runs and says whether Ollama is reachable (informational: Ollama runs outside
the stack). Standard library only."""
import json
import os
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DATA = os.environ.get("CORE_DATA_DIR", "/data")
MEMORY = os.path.join(DATA, "memory.json")
OLLAMA = os.environ.get("OLLAMA_BASE_URL", "http://host.docker.internal:11434").rstrip("/")
MODEL = os.environ.get("OLLAMA_MODEL", "llama3.1:8b")
LOCK = threading.Lock()
TOOLS = [
    {"name": "memory_put", "description": "Remember a value under a key.",
     "inputSchema": {"type": "object", "properties": {"key": {"type": "string"}, "value": {"type": "string"}}, "required": ["key", "value"]}},
    {"name": "memory_get", "description": "Recall the value under a key.",
     "inputSchema": {"type": "object", "properties": {"key": {"type": "string"}}, "required": ["key"]}},
    {"name": "generate", "description": "Generate text with the host's Ollama.",
     "inputSchema": {"type": "object", "properties": {"prompt": {"type": "string"}}, "required": ["prompt"]}},
]


def load():
    try:
        with open(MEMORY) as f:
            return json.load(f)
    except FileNotFoundError:
        return {}


def save(memory):
    tmp = MEMORY + ".tmp"
    with open(tmp, "w") as f:
        json.dump(memory, f, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, MEMORY)


def ollama(path, body=None, timeout=3):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(OLLAMA + path, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.load(r)


def call_tool(name, args):
    if name == "memory_put":
        with LOCK:
            memory = load()
            memory[str(args["key"])] = str(args["value"])
            save(memory)
        return "stored %s" % args["key"]
    if name == "memory_get":
        return load().get(str(args["key"]), "")
    if name == "generate":
        return ollama("/api/generate", {"model": MODEL, "prompt": str(args["prompt"]), "stream": False}, timeout=120)["response"]
    raise LookupError("unknown tool %s" % name)


class Handler(BaseHTTPRequestHandler):
    def send(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path != "/health":
            return self.send(404, {"error": "not found"})
        try:
            version = ollama("/api/version", timeout=1)["version"]
        except (OSError, ValueError, KeyError):
            version = None
        return self.send(200, {"status": "ok", "ollama": OLLAMA, "ollama_version": version, "memory_keys": len(load())})

    def do_POST(self):
        if self.path != "/mcp":
            return self.send(404, {"error": "not found"})
        try:
            msg = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        except ValueError:
            return self.send(400, {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "parse error"}})
        method, params, rid = msg.get("method"), msg.get("params") or {}, msg.get("id")
        try:
            if method == "initialize":
                result = {"protocolVersion": "2025-11-25", "capabilities": {"tools": {}}, "serverInfo": {"name": "mcp-core", "version": "1.0.0"}}
            elif method == "tools/list":
                result = {"tools": TOOLS}
            elif method == "tools/call":
                try:
                    text = call_tool(params.get("name"), params.get("arguments") or {})
                    result = {"content": [{"type": "text", "text": text}], "isError": False}
                except (KeyError, OSError, ValueError) as e:
                    result = {"content": [{"type": "text", "text": "error: %s" % e}], "isError": True}
            else:
                raise LookupError("unknown method %s" % method)
        except LookupError as e:
            return self.send(200, {"jsonrpc": "2.0", "id": rid, "error": {"code": -32601, "message": str(e)}})
        return self.send(200, {"jsonrpc": "2.0", "id": rid, "result": result})


if __name__ == "__main__":
    os.makedirs(DATA, exist_ok=True)
    print("mcp-core on :%s, Ollama at %s" % (os.environ.get("PORT", "8080"), OLLAMA), flush=True)
    ThreadingHTTPServer(("0.0.0.0", int(os.environ.get("PORT", "8080"))), Handler).serve_forever()
