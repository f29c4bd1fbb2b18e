"""A small PostgreSQL client over the wire protocol (v3), standard library only: startup,
trust / cleartext / md5 / SCRAM-SHA-256 authentication, and the simple query protocol with
text results. Enough for the api's schema, account approvals and audit trail; a real
deployment would use psycopg."""
import base64
import hashlib
import hmac
import os
import socket
import struct


class PgError(Exception):
    pass


class Connection:
    def __init__(self, host, port, user, password, database, timeout=5):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.user, self.password = user, password
        params = b"user\0" + user.encode() + b"\0database\0" + database.encode() + b"\0\0"
        body = struct.pack("!i", 196608) + params
        self.sock.sendall(struct.pack("!i", len(body) + 4) + body)
        self._authenticate()

    def _recv_exact(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise PgError("connection closed by the server")
            buf += chunk
        return buf

    def _message(self):
        kind = self._recv_exact(1)
        (length,) = struct.unpack("!i", self._recv_exact(4))
        return kind, self._recv_exact(length - 4)

    def _send(self, kind, body):
        self.sock.sendall(kind + struct.pack("!i", len(body) + 4) + body)

    @staticmethod
    def _error(body):
        fields = dict((f[:1], f[1:].decode(errors="replace")) for f in body.split(b"\0") if f)
        return PgError("%s: %s" % (fields.get(b"C", "?"), fields.get(b"M", "error")))

    def _authenticate(self):
        scram = None
        while True:
            kind, body = self._message()
            if kind == b"E":
                raise self._error(body)
            if kind == b"Z":
                return
            if kind != b"R":
                continue
            (code,) = struct.unpack("!i", body[:4])
            if code == 0:
                continue
            if code == 3:
                self._send(b"p", self.password.encode() + b"\0")
            elif code == 5:
                inner = hashlib.md5((self.password + self.user).encode()).hexdigest()
                outer = hashlib.md5(inner.encode() + body[4:8]).hexdigest()
                self._send(b"p", b"md5" + outer.encode() + b"\0")
            elif code == 10:
                nonce = base64.b64encode(os.urandom(18)).decode()
                first_bare = "n=,r=" + nonce
                msg = b"SCRAM-SHA-256\0" + struct.pack("!i", len(first_bare) + 3) + b"n,," + first_bare.encode()
                self._send(b"p", msg)
                scram = (nonce, first_bare)
            elif code == 11:
                nonce, first_bare = scram
                server_first = body[4:].decode()
                attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
                if not attrs["r"].startswith(nonce):
                    raise PgError("SCRAM: the server nonce does not extend ours")
                salted = hashlib.pbkdf2_hmac("sha256", self.password.encode(), base64.b64decode(attrs["s"]), int(attrs["i"]))
                client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
                stored_key = hashlib.sha256(client_key).digest()
                final_bare = "c=biws,r=" + attrs["r"]
                auth_message = ",".join([first_bare, server_first, final_bare]).encode()
                signature = hmac.new(stored_key, auth_message, hashlib.sha256).digest()
                proof = bytes(a ^ b for a, b in zip(client_key, signature))
                self._send(b"p", (final_bare + ",p=" + base64.b64encode(proof).decode()).encode())
            elif code == 12:
                continue
            else:
                raise PgError("unsupported authentication method %d" % code)

    def query(self, sql):
        """Runs one or more statements; returns the rows of the last one (text or None)."""
        self._send(b"Q", sql.encode() + b"\0")
        rows, error = [], None
        while True:
            kind, body = self._message()
            if kind == b"T":
                rows = []
            elif kind == b"D":
                (n,) = struct.unpack("!h", body[:2])
                pos, row = 2, []
                for _ in range(n):
                    (size,) = struct.unpack("!i", body[pos:pos + 4])
                    pos += 4
                    if size < 0:
                        row.append(None)
                    else:
                        row.append(body[pos:pos + size].decode())
                        pos += size
                rows.append(row)
            elif kind == b"E":
                error = self._error(body)
            elif kind == b"Z":
                if error:
                    raise error
                return rows

    def close(self):
        try:
            self._send(b"X", b"")
        finally:
            self.sock.close()


def literal(value):
    """A SQL string literal (standard_conforming_strings on, the default)."""
    return "'" + str(value).replace("'", "''") + "'"
