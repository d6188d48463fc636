"""The real registry (Debian's `docker-registry`, distribution v2) in token mode, and the token
issuer it trusts, both on loopback ports with their files in a temp dir.

Same scheme as the integration tests (tests/it/fixtures/token.rs, registry.rs): the issuer signs
RS256 JWTs with a key made by `openssl req`, by piping the signing input to `openssl dgst -sha256
-sign`; the JWT header carries the self-signed certificate as `x5c` and the registry trusts it as
`rootcertbundle`. Anyone gets any scope (no credentials): the benchmark measures requests, not
authorisation.
"""

import base64
import ctypes
import http.server
import json
import os
import signal
import subprocess
import threading
import time
import urllib.parse
import urllib.request

REGISTRY_BIN = "/usr/bin/docker-registry"
SERVICE = "wdbench-registry"
ISSUER = "wdbench-token-issuer"
TOKEN_TTL = 300

_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1


def die_with_parent():
    """preexec_fn: the child gets SIGKILL when this process dies, even by SIGKILL."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenIssuer:
    def __init__(self, workdir):
        self.key = os.path.join(workdir, "token.key")
        self.cert = os.path.join(workdir, "token.crt")
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", "/CN=" + ISSUER, "-keyout", self.key, "-out", self.cert],
            check=True, stdin=subprocess.DEVNULL, capture_output=True,
        )
        der = subprocess.run(
            ["openssl", "x509", "-outform", "DER", "-in", self.cert],
            check=True, stdin=subprocess.DEVNULL, capture_output=True,
        ).stdout
        self.x5c = base64.b64encode(der).decode()
        self.jti = 0
        self.lock = threading.Lock()
        self.scopes_asked = []  # the number of scopes of each token request
        self.cache = {}
        issuer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                url = urllib.parse.urlsplit(self.path)
                if url.path != "/token":
                    return self._answer(404, {"errors": [{"code": "NOT_FOUND"}]})
                scopes = [v for k, v in urllib.parse.parse_qsl(url.query) if k == "scope"]
                with issuer.lock:
                    issuer.scopes_asked.append(sum(len(s.split(" ")) for s in scopes))
                try:
                    token = issuer.mint(scopes)
                except subprocess.CalledProcessError as e:
                    return self._answer(500, {"errors": [{"code": "SIGN", "message": str(e)}]})
                self._answer(200, {"token": token, "access_token": token, "expires_in": TOKEN_TTL})

            def _answer(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, name="token-issuer", daemon=True).start()

    def take_scopes(self):
        with self.lock:
            out, self.scopes_asked = self.scopes_asked, []
        return out

    def mint(self, scopes):
        # The same scopes within a minute get the same token: signing by spawning openssl costs
        # several ms, which would count as registry latency in the wall-time row.
        key = tuple(sorted(scopes))
        with self.lock:
            hit = self.cache.get(key)
        if hit and hit[0] > time.time():
            return hit[1]
        token = self._mint(scopes)
        with self.lock:
            self.cache[key] = (time.time() + 60, token)
        return token

    def _mint(self, scopes):
        now = int(time.time())
        access = []
        for scope in scopes:
            for one in scope.split(" "):
                kind, _, rest = one.partition(":")
                name, _, actions = rest.rpartition(":")
                if kind and name:
                    access.append({"type": kind, "name": name,
                                   "actions": [a for a in actions.split(",") if a]})
        with self.lock:
            self.jti += 1
            jti = self.jti
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]}
        claims = {"iss": ISSUER, "sub": "anonymous", "aud": SERVICE, "exp": now + TOKEN_TTL,
                  "nbf": now - 10, "iat": now, "jti": f"wdbench-{os.getpid()}-{jti}", "access": access}
        signing_input = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
        sig = subprocess.run(
            ["openssl", "dgst", "-sha256", "-sign", self.key],
            input=signing_input.encode(), check=True, capture_output=True,
        ).stdout
        return signing_input + "." + b64url(sig)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Registry:
    """`docker-registry serve` on a free loopback port; `realm` is where it sends clients for tokens."""

    def __init__(self, workdir, realm):
        self.workdir = workdir
        self.storage = os.path.join(workdir, "storage")
        os.makedirs(self.storage, exist_ok=True)
        self.proc = None
        last_log = ""
        for _attempt in range(5):
            self.port = free_port()
            config = (
                "version: 0.1\n"
                "log:\n  level: warn\n  formatter: text\n  accesslog:\n    disabled: true\n"
                f"storage:\n  filesystem:\n    rootdirectory: {self.storage}\n  delete:\n    enabled: true\n"
                f"http:\n  addr: 127.0.0.1:{self.port}\n  secret: wdbench-fixed-secret\n"
                f"auth:\n  token:\n    realm: {realm}\n    service: {SERVICE}\n    issuer: {ISSUER}\n"
                f"    rootcertbundle: {os.path.join(workdir, 'token.crt')}\n"
            )
            path = os.path.join(workdir, "config.yml")
            with open(path, "w") as f:
                f.write(config)
            self.log_path = os.path.join(workdir, "registry.log")
            log = open(self.log_path, "w")
            self.proc = subprocess.Popen(
                [REGISTRY_BIN, "serve", path], stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, preexec_fn=die_with_parent,
            )
            log.close()
            if self._wait_ready():
                return
            last_log = self.log()
            self.close()
        raise RuntimeError(f"docker-registry did not start; log:\n{last_log}")

    def log(self):
        try:
            with open(self.log_path) as f:
                return f.read()
        except OSError:
            return ""

    def _wait_ready(self):
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/v2/", timeout=1)
                return True
            except urllib.error.HTTPError as e:
                if e.code == 401:
                    return True
            except OSError:
                pass
            time.sleep(0.02)
        return False

    def close(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
