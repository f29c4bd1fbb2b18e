"""DocMind in miniature: a Streamlit-style web app (its health path is Streamlit's own,
/_stcore/health) that keeps documents and conversations under DOCMIND_DATA_DIR and its model
cache under DOCMIND_MODEL_CACHE, and reports the hardware profile it was started with.
Standard library only; the real application is Streamlit + LlamaIndex on PyTorch.

  GET  /_stcore/health     "ok" (what Streamlit answers)
  GET  /api/profile        DOCMIND_PROFILE, context length, GPU memory limit
  GET  /api/documents      the stored documents
  PUT  /api/documents/<n>  store a document (body: its text)
  GET  /                   a page
"""
import json
import os
import re
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DATA = os.environ.get("DOCMIND_DATA_DIR", "/app/data")
DOCS = os.path.join(DATA, "documents")
CONVERSATIONS = os.path.join(DATA, "conversations")
MODELS = os.environ.get("DOCMIND_MODEL_CACHE", "/app/data/models")
NAME = re.compile(r"^[A-Za-z0-9._-]{1,100}$")


class Handler(BaseHTTPRequestHandler):
    def send(self, status, body, ctype="application/json"):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/_stcore/health":
            return self.send(200, b"ok", "text/plain; charset=utf-8")
        if self.path == "/api/profile":
            return self.send(200, {
                "profile": os.environ.get("DOCMIND_PROFILE", ""),
                "context_length": int(os.environ.get("DOCMIND_CONTEXT_LENGTH", "0")),
                "gpu_memory_limit_gb": int(os.environ.get("DOCMIND_GPU_MEMORY_LIMIT", "0")),
                "model_cache": sorted(os.listdir(MODELS)),
            })
        if self.path == "/api/documents":
            return self.send(200, sorted(os.listdir(DOCS)))
        if self.path == "/":
            return self.send(200, b"<!doctype html><title>DocMind AI</title><h1>DocMind AI</h1>", "text/html")
        return self.send(404, {"error": "not found"})

    def do_PUT(self):
        name = self.path[len("/api/documents/"):] if self.path.startswith("/api/documents/") else ""
        if not NAME.match(name):
            return self.send(400, {"error": "document names: letters, digits, . _ -"})
        body = self.rfile.read(min(int(self.headers.get("Content-Length") or 0), 10 * 1024 * 1024))
        tmp = os.path.join(DOCS, "." + name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(body)
        os.replace(tmp, os.path.join(DOCS, name))
        with open(os.path.join(CONVERSATIONS, "log.jsonl"), "a") as f:
            f.write(json.dumps({"event": "document_added", "name": name}) + "\n")
        return self.send(201, {"stored": name, "bytes": len(body)})


if __name__ == "__main__":
    for d in (DOCS, CONVERSATIONS, MODELS):
        os.makedirs(d, exist_ok=True)
    marker = os.path.join(MODELS, "embedding-model.txt")
    if not os.path.exists(marker):
        with open(marker, "w") as f:
            f.write("the model cache: weights are downloaded here once and kept in the volume\n")
    print("DocMind profile %s on :8501" % os.environ.get("DOCMIND_PROFILE", "?"), flush=True)
    ThreadingHTTPServer(("0.0.0.0", 8501), Handler).serve_forever()
