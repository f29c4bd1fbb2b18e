"""Melvin's worker: the ingestion job, kept out of the api so it stays responsive. Every
WORKER_INTERVAL_S it makes sure the Qdrant collection exists and upserts the catalogue's
entries (embedded with a small hashing embedder standing in for the real model), then touches
a heartbeat file the compose healthcheck reads. Standard library only."""
import hashlib
import json
import math
import os
import time
import urllib.error
import urllib.request

QDRANT = os.environ.get("QDRANT_URL", "http://qdrant:6333").rstrip("/")
COLLECTION = os.environ.get("QDRANT_COLLECTION", "cards")
INTERVAL = float(os.environ.get("WORKER_INTERVAL_S", "30"))
HEARTBEAT = os.environ.get("WORKER_HEARTBEAT", "/tmp/worker-heartbeat")
DIM = 8
CATALOGUE = [
    "Llanowar Elves: tap for one green mana",
    "Counterspell: counter target spell",
    "Lightning Bolt: three damage to any target",
    "Dark Ritual: add three black mana",
    "Swords to Plowshares: exile target creature",
]


def log(event, **fields):
    print(json.dumps({"ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "event": event, **fields}), flush=True)


def embed(text):
    v = [0.0] * DIM
    for word in text.lower().split():
        h = hashlib.sha256(word.encode()).digest()
        v[h[0] % DIM] += 1.0 if h[1] % 2 else -1.0
    n = math.sqrt(sum(x * x for x in v)) or 1.0
    return [x / n for x in v]


def call(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(QDRANT + path, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.load(r)


def ingest():
    try:
        call("GET", "/collections/" + COLLECTION)
    except urllib.error.HTTPError as e:
        if e.code != 404:
            raise
        call("PUT", "/collections/" + COLLECTION, {"vectors": {"size": DIM, "distance": "Cosine"}})
        log("collection_created", collection=COLLECTION)
    points = [{"id": i + 1, "vector": embed(t), "payload": {"text": t}} for i, t in enumerate(CATALOGUE)]
    call("PUT", "/collections/%s/points" % COLLECTION, {"points": points})
    log("ingested", collection=COLLECTION, points=len(points))


def main():
    while True:
        try:
            ingest()
            with open(HEARTBEAT, "w") as f:
                f.write(str(time.time()))
        except (OSError, ValueError) as e:
            log("ingest_failed", error=str(e))
        time.sleep(INTERVAL)


if __name__ == "__main__":
    main()
