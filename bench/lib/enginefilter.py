"""A unix-socket proxy of the Docker Engine API that shows the daemon under test only the
benchmark's own containers.

The engine is shared: other containers on the host must neither be counted in the measurements
nor touched by the daemon under test (watch-docker's start-up crash recovery looks at every
container of the host, whatever its label filters say). Container lists (`GET /containers/json`)
are filtered to the benchmark's label; every other request is relayed as it is, one upstream
connection per request, the response streamed back (re-chunked when its length is unknown, so a
pull's progress stream still flows).
"""

import http.client
import json
import os
import re
import socket
import threading
import urllib.parse

from engine import SOCKET, UnixConnection

LIST = re.compile(r"^(/v[0-9.]+)?/containers/json$")
HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "proxy-connection"}


class EngineFilter:
    def __init__(self, workdir, label, value):
        self.path = os.path.join(workdir, "docker.sock")
        self.label, self.value = label, value
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        self.listener.listen(256)
        self.closed = False
        threading.Thread(target=self._accept, name="engine-filter", daemon=True).start()

    @property
    def url(self):
        return "unix://" + self.path

    def close(self):
        self.closed = True
        try:
            self.listener.close()
        except OSError:
            pass
        try:
            os.unlink(self.path)
        except OSError:
            pass

    def _accept(self):
        while not self.closed:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        rfile = conn.makefile("rb")
        try:
            while self._one(conn, rfile):
                pass
        except (OSError, ValueError, http.client.HTTPException):
            pass
        finally:
            rfile.close()
            conn.close()

    def _one(self, conn, rfile):
        line = rfile.readline(65537)
        if not line:
            return False
        method, target, _ = line.decode("latin-1").split(" ", 2)
        headers = []
        while True:
            h = rfile.readline(65537)
            if h in (b"\r\n", b"\n", b""):
                break
            k, _, v = h.decode("latin-1").partition(":")
            headers.append((k.strip(), v.strip()))
        hmap = {k.lower(): v for k, v in headers}
        body = None
        if "chunked" in hmap.get("transfer-encoding", "").lower():
            parts = []
            while True:
                size = int(rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                parts.append(rfile.read(size))
                rfile.readline()
            body = b"".join(parts)
        elif int(hmap.get("content-length", "0") or "0") > 0:
            body = rfile.read(int(hmap["content-length"]))
        keep_alive = hmap.get("connection", "").lower() != "close"

        up = UnixConnection(SOCKET, timeout=600)
        try:
            up.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
            for k, v in headers:
                if k.lower() not in HOP:
                    up.putheader(k, v)
            if body is not None:
                up.putheader("Content-Length", str(len(body)))
            up.endheaders(body)
            resp = up.getresponse()
            path = urllib.parse.urlsplit(target).path
            if method == "GET" and LIST.match(path) and resp.status == 200:
                data = json.loads(resp.read())
                data = [c for c in data if (c.get("Labels") or {}).get(self.label) == self.value]
                self._send(conn, resp, json.dumps(data).encode(), keep_alive)
                return keep_alive
            no_body = method == "HEAD" or resp.status in (204, 304) or 100 <= resp.status < 200
            head = [f"HTTP/1.1 {resp.status} {resp.reason}"]
            head += [f"{k}: {v}" for k, v in resp.getheaders() if k.lower() not in HOP]
            if no_body:
                head.append("Content-Length: 0" if method != "HEAD" else
                            f"Content-Length: {resp.getheader('Content-Length', '0')}")
            elif resp.length is not None:
                head.append(f"Content-Length: {resp.length}")
            else:
                head.append("Transfer-Encoding: chunked")
            head.append("Connection: keep-alive" if keep_alive else "Connection: close")
            conn.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
            if no_body:
                return keep_alive
            chunked = resp.length is None
            while True:
                piece = resp.read1(65536)
                if not piece:
                    break
                conn.sendall(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            if chunked:
                conn.sendall(b"0\r\n\r\n")
            return keep_alive
        finally:
            up.close()

    @staticmethod
    def _send(conn, resp, data, keep_alive):
        head = [f"HTTP/1.1 {resp.status} {resp.reason}"]
        head += [f"{k}: {v}" for k, v in resp.getheaders() if k.lower() not in HOP]
        head.append(f"Content-Length: {len(data)}")
        head.append("Connection: keep-alive" if keep_alive else "Connection: close")
        conn.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + data)
