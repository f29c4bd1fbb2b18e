#!/usr/bin/env python3
"""A Qdrant stand-in for stackpilot's example stacks (no Qdrant image can be had here).

It is NOT Qdrant. It answers the REST shapes the examples and stackpilot use, as documented in
Qdrant's OpenAPI spec (https://api.qdrant.tech): GET / (title, version), /healthz, /livez and
/readyz; collections (list, create, get, delete) and points (upsert, get, scroll, search by
cosine / dot / euclid). Collections live under /qdrant/storage/collections/<name>/ as JSON
files written atomically, so a volume mounted at /qdrant/storage holds the data exactly where
the real image keeps it, and a volume backup and restore carries it.
"""
import json
import math
import os
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STORAGE = os.environ.get("QDRANT__STORAGE__STORAGE_PATH", "/qdrant/storage")
PORT = int(os.environ.get("QDRANT__SERVICE__HTTP_PORT", "6333"))
VERSION = "1.13.6-standin"
NAME = re.compile(r"^[A-Za-z0-9_-]{1,255}$")
LOCK = threading.Lock()


def coll_dir(name):
    return os.path.join(STORAGE, "collections", name)


def write_json(path, value):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(value, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_json(path, default):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return default


def score(distance, a, b):
    if distance == "Dot":
        return sum(x * y for x, y in zip(a, b))
    if distance == "Euclid":
        return -math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b)))
    na = math.sqrt(sum(x * x for x in a)) or 1.0
    nb = math.sqrt(sum(y * y for y in b)) or 1.0
    return sum(x * y for x, y in zip(a, b)) / (na * nb)


class Handler(BaseHTTPRequestHandler):
    server_version = "qdrant-standin"

    def log_message(self, fmt, *args):
        print("%s %s" % (self.address_string(), fmt % args), flush=True)

    def reply(self, status, body, started, text=False):
        if text:
            data = body.encode()
            ctype = "text/plain; charset=utf-8"
        else:
            if status < 400:
                body = {"result": body, "status": "ok", "time": time.time() - started}
            else:
                body = {"status": {"error": body}, "time": time.time() - started}
            data = json.dumps(body).encode()
            ctype = "application/json"
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n > 64 * 1024 * 1024:
            raise ValueError("request body too large")
        raw = self.rfile.read(n) if n else b"{}"
        return json.loads(raw or b"{}")

    def route(self, method):
        started = time.time()
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        parts = [p for p in path.split("/") if p]
        try:
            if method == "GET" and path == "/":
                return self._root(started)
            if method == "GET" and path in ("/healthz", "/livez"):
                return self.reply(200, "healthz check passed", started, text=True)
            if method == "GET" and path == "/readyz":
                return self.reply(200, "all shards are ready", started, text=True)
            if parts[:1] != ["collections"]:
                return self.reply(404, "Not found", started)
            if len(parts) == 1 and method == "GET":
                base = os.path.join(STORAGE, "collections")
                names = sorted(os.listdir(base)) if os.path.isdir(base) else []
                return self.reply(200, {"collections": [{"name": n} for n in names]}, started)
            name = parts[1]
            if not NAME.match(name):
                return self.reply(400, "Bad collection name", started)
            d = coll_dir(name)
            cfg_path = os.path.join(d, "config.json")
            pts_path = os.path.join(d, "points.json")
            with LOCK:
                cfg = read_json(cfg_path, None)
                if len(parts) == 2 and method == "PUT":
                    if cfg is not None:
                        return self.reply(409, "Wrong input: Collection `%s` already exists!" % name, started)
                    b = self.body()
                    os.makedirs(d, exist_ok=True)
                    write_json(pts_path, {})
                    write_json(cfg_path, {"vectors": b.get("vectors", {})})
                    return self.reply(200, True, started)
                if cfg is None:
                    return self.reply(404, "Not found: Collection `%s` doesn't exist!" % name, started)
                points = read_json(pts_path, {})
                if len(parts) == 2 and method == "GET":
                    return self.reply(200, {
                        "status": "green", "optimizer_status": "ok",
                        "points_count": len(points), "indexed_vectors_count": len(points),
                        "segments_count": 1, "config": {"params": cfg},
                    }, started)
                if len(parts) == 2 and method == "DELETE":
                    for f in ("points.json", "config.json"):
                        try:
                            os.remove(os.path.join(d, f))
                        except FileNotFoundError:
                            pass
                    os.rmdir(d)
                    return self.reply(200, True, started)
                if parts[2:] == ["points"] and method == "PUT":
                    for p in self.body().get("points", []):
                        points[str(p["id"])] = {"id": p["id"], "vector": p.get("vector"), "payload": p.get("payload") or {}}
                    write_json(pts_path, points)
                    return self.reply(200, {"operation_id": len(points), "status": "completed"}, started)
                if parts[2:] == ["points", "scroll"] and method == "POST":
                    limit = int(self.body().get("limit", 10))
                    items = sorted(points.values(), key=lambda p: str(p["id"]))[:limit]
                    return self.reply(200, {"points": [{"id": p["id"], "payload": p["payload"]} for p in items], "next_page_offset": None}, started)
                if parts[2:] == ["points", "search"] and method == "POST":
                    b = self.body()
                    vec = b.get("vector") or []
                    dist = (cfg.get("vectors") or {}).get("distance", "Cosine")
                    hits = sorted(
                        ({"id": p["id"], "version": 0, "score": score(dist, vec, p["vector"] or []), "payload": p["payload"]} for p in points.values()),
                        key=lambda h: -h["score"],
                    )[: int(b.get("limit", 10))]
                    return self.reply(200, hits, started)
                if len(parts) == 4 and parts[2] == "points" and method == "GET":
                    p = points.get(parts[3])
                    if p is None:
                        return self.reply(404, "Not found: Point with id %s does not exists!" % parts[3], started)
                    return self.reply(200, p, started)
            return self.reply(404, "Not found", started)
        except (ValueError, KeyError, TypeError) as e:
            return self.reply(400, "Wrong input: %s" % e, started)

    def _root(self, started):
        data = json.dumps({"title": "qdrant - vector search engine", "version": VERSION, "commit": None}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.route("GET")

    def do_PUT(self):
        self.route("PUT")

    def do_POST(self):
        self.route("POST")

    def do_DELETE(self):
        self.route("DELETE")


if __name__ == "__main__":
    os.makedirs(os.path.join(STORAGE, "collections"), exist_ok=True)
    print("Qdrant stand-in %s listening on 0.0.0.0:%d, storage %s" % (VERSION, PORT, STORAGE), flush=True)
    ThreadingHTTPServer(("0.0.0.0", PORT), Handler).serve_forever()
