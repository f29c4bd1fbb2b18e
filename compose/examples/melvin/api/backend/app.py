"""Melvin's api: the chat/analysis endpoints' skeleton, the admin approval flow with its audit
trail (approvals, denials and failed logins in Postgres), and the built frontend, served from
one container. Standard library only (Postgres through backend/pgwire.py), so the image needs
nothing beyond python:3.11-slim.

  GET  /health                liveness (the compose healthcheck)
  GET  /ready                 Postgres answers a query; MongoDB, Qdrant and Ollama reachable
  GET  /metrics               request counts (OpenMetrics text)
  GET  /                      the frontend (built into the image by the Dockerfile's first stage)
  POST /api/register          {email, password}: a pending account (password policy enforced)
  POST /api/login             {email, password}: 200, or 401/403 with an audit entry
  POST /api/admin/approve     {email} with the admin's Basic credentials: approve (audited)
  POST /api/admin/deny        {email}: deny (audited)
  GET  /api/admin/audit       the audit trail, newest first (admin only)
"""
import base64
import hashlib
import hmac
import json
import os
import re
import socket
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from backend import pgwire

FRONTEND = os.environ.get("FRONTEND_DIR", "/app/frontend/dist")
COUNTS = {}
COUNTS_LOCK = threading.Lock()

SCHEMA = """
create table if not exists accounts(
  id bigserial primary key,
  email text unique not null,
  password_hash text not null,
  status text not null default 'pending',
  is_admin boolean not null default false,
  created_at timestamptz not null default now());
create table if not exists audit_log(
  id bigint generated always as identity primary key,
  at timestamptz not null default now(),
  actor text not null,
  action text not null,
  subject text,
  detail text);
"""


def log(event, **fields):
    print(json.dumps({"ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "event": event, **fields}), flush=True)


def secret(name, default=None):
    path = os.environ.get(name + "_FILE")
    if path:
        with open(path) as f:
            return f.read().rstrip("\n")
    return os.environ.get(name, default)


def db():
    return pgwire.Connection(
        os.environ.get("POSTGRES_HOST", "postgres"), int(os.environ.get("POSTGRES_PORT", "5432")),
        secret("POSTGRES_USER", "melvin"), secret("POSTGRES_PASSWORD", ""), secret("POSTGRES_DB", "melvin"))


def sql(statement):
    c = db()
    try:
        return c.query(statement)
    finally:
        c.close()


def policy_ok(password):
    """Seed 003's policy: at least 8 characters with upper, lower, digit and symbol."""
    return (len(password) >= 8 and re.search(r"[A-Z]", password) and re.search(r"[a-z]", password)
            and re.search(r"[0-9]", password) and re.search(r"[^A-Za-z0-9]", password)) is not None


def hash_password(password, salt=None):
    salt = salt or os.urandom(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, 200_000)
    return "pbkdf2$" + base64.b64encode(salt).decode() + "$" + base64.b64encode(digest).decode()


def check_password(password, stored):
    try:
        _, salt, digest = stored.split("$")
    except ValueError:
        return False
    return hmac.compare_digest(hash_password(password, base64.b64decode(salt)), stored)


def audit(actor, action, subject=None, detail=None):
    q = pgwire.literal
    sql("insert into audit_log(actor, action, subject, detail) values (%s, %s, %s, %s)" % (
        q(actor), q(action), "null" if subject is None else q(subject), "null" if detail is None else q(detail)))
    log("audit", actor=actor, action=action, subject=subject)


def migrate():
    for attempt in range(60):
        try:
            sql(SCHEMA)
            break
        except (OSError, pgwire.PgError) as e:
            log("waiting_for_postgres", attempt=attempt, error=str(e))
            time.sleep(1)
    else:
        sys.exit("postgres never answered")
    email, password = os.environ.get("ADMIN_EMAIL"), secret("ADMIN_PASSWORD")
    if email and password:
        if not policy_ok(password):
            sys.exit("ADMIN_PASSWORD does not meet the password policy")
        q = pgwire.literal
        rows = sql("select 1 from accounts where email = %s" % q(email))
        if not rows:
            sql("insert into accounts(email, password_hash, status, is_admin) values (%s, %s, 'approved', true)" % (q(email), q(hash_password(password))))
            audit("system", "admin_bootstrap", email)


def reachable_tcp(host, port):
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def reachable_http(url):
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return 200 <= r.status < 300
    except OSError:
        return False


class Handler(BaseHTTPRequestHandler):
    server_version = "melvin-api"

    def log_message(self, fmt, *args):
        log("http", client=self.address_string(), line=fmt % args)

    def send(self, status, body, ctype="application/json"):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        with COUNTS_LOCK:
            key = (self.command, status)
            COUNTS[key] = COUNTS.get(key, 0) + 1
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def json_body(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n > 65536:
            raise ValueError("body too large")
        return json.loads(self.rfile.read(n) or b"{}")

    def admin(self):
        """The admin named by Basic credentials, or None."""
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Basic "):
            return None
        try:
            email, password = base64.b64decode(auth[6:]).decode().split(":", 1)
        except ValueError:
            return None
        rows = sql("select password_hash from accounts where email = %s and is_admin and status = 'approved'" % pgwire.literal(email))
        if rows and check_password(password, rows[0][0]):
            return email
        audit(email or "anonymous", "admin_login_failed")
        return None

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path == "/health":
            return self.send(200, {"status": "ok"})
        if path == "/ready":
            checks = {}
            try:
                checks["postgres"] = sql("select 1") == [["1"]]
            except (OSError, pgwire.PgError):
                checks["postgres"] = False
            checks["mongodb"] = reachable_tcp(os.environ.get("MONGO_HOST", "mongodb"), 27017)
            checks["qdrant"] = reachable_http(os.environ.get("QDRANT_URL", "http://qdrant:6333") + "/readyz")
            checks["ollama"] = reachable_http(os.environ.get("OLLAMA_BASE_URL", "http://ollama:11434") + "/api/version")
            return self.send(200 if all(checks.values()) else 503, checks)
        if path == "/metrics":
            with COUNTS_LOCK:
                lines = ["# TYPE melvin_requests counter"] + [
                    'melvin_requests_total{method="%s",status="%d"} %d' % (m, s, n) for (m, s), n in sorted(COUNTS.items())]
            return self.send(200, ("\n".join(lines) + "\n# EOF\n").encode(), "application/openmetrics-text")
        if path == "/api/admin/audit":
            if not self.admin():
                return self.send(401, {"error": "admin credentials required"})
            rows = sql("select id, at, actor, action, subject from audit_log order by id desc limit 200")
            return self.send(200, [dict(zip(["id", "at", "actor", "action", "subject"], r)) for r in rows])
        name = "index.html" if path == "/" else path.lstrip("/")
        full = os.path.realpath(os.path.join(FRONTEND, name))
        if full.startswith(os.path.realpath(FRONTEND) + os.sep) and os.path.isfile(full):
            ctype = "text/html; charset=utf-8" if full.endswith(".html") else "application/javascript" if full.endswith(".js") else "application/octet-stream"
            with open(full, "rb") as f:
                return self.send(200, f.read(), ctype)
        return self.send(404, {"error": "not found"})

    def do_POST(self):
        try:
            body = self.json_body()
        except ValueError:
            return self.send(400, {"error": "invalid JSON"})
        q = pgwire.literal
        email, password = str(body.get("email", "")), str(body.get("password", ""))
        if self.path == "/api/register":
            if not policy_ok(password):
                return self.send(400, {"error": "password must have 8+ characters with upper, lower, digit and symbol"})
            try:
                sql("insert into accounts(email, password_hash) values (%s, %s)" % (q(email), q(hash_password(password))))
            except pgwire.PgError:
                return self.send(409, {"error": "already registered"})
            audit(email, "register")
            return self.send(201, {"status": "pending"})
        if self.path == "/api/login":
            rows = sql("select password_hash, status from accounts where email = %s" % q(email))
            if not rows or not check_password(password, rows[0][0]):
                audit(email, "login_failed")
                return self.send(401, {"error": "invalid credentials"})
            if rows[0][1] != "approved":
                audit(email, "login_while_" + rows[0][1])
                return self.send(403, {"status": rows[0][1]})
            audit(email, "login")
            return self.send(200, {"status": "approved"})
        if self.path in ("/api/admin/approve", "/api/admin/deny"):
            admin = self.admin()
            if not admin:
                return self.send(401, {"error": "admin credentials required"})
            status = "approved" if self.path.endswith("approve") else "denied"
            rows = sql("update accounts set status = %s where email = %s and not is_admin returning id" % (q(status), q(email)))
            if not rows:
                return self.send(404, {"error": "no such account"})
            audit(admin, status, email)
            return self.send(200, {"email": email, "status": status})
        return self.send(404, {"error": "not found"})


def main():
    migrate()
    port = int(os.environ.get("PORT", "8000"))
    log("listening", port=port)
    ThreadingHTTPServer(("0.0.0.0", port), Handler).serve_forever()


if __name__ == "__main__":
    main()
