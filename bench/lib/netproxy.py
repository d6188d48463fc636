"""A TCP proxy that adds round-trip latency and counts the HTTP requests passing through it.

Latency: every chunk is forwarded RTT/2 after it arrived, in each direction, so one request and
its answer cost one RTT however large the window. With `handshake` on, a new connection's first
bytes wait one more RTT, standing for the TCP handshake a real network would cost (the client's
connect() to us is local and instant); SPEC.md's ideal (⌈N/c⌉ + 2) × RTT counts no handshakes, so
it is off by default. With RTT 0 bytes are forwarded at once.

Counting: the client-to-server stream of each connection is parsed as HTTP/1.1 requests
(Content-Length and chunked bodies are skipped), and each request line is classified: `ping`
(/v2/), `token`, `manifest_head`, `manifest_get`, `blob`, `other`. The proxy does not know about
watch-docker; it only sees bytes.
"""

import collections
import heapq
import socket
import threading
import time


def classify(method, target):
    path = target.split("?", 1)[0]
    if path in ("/v2", "/v2/"):
        return "ping"
    if path.endswith("/token") or path == "/token":
        return "token"
    if "/manifests/" in path:
        return "manifest_head" if method == "HEAD" else "manifest_get" if method == "GET" else "manifest_other"
    if "/blobs/" in path:
        return "blob"
    return "other"


class RequestParser:
    """Incremental HTTP/1.1 request splitter for one client-to-server stream."""

    def __init__(self, on_request):
        self.on_request = on_request
        self.buf = b""
        self.state = "head"  # head | body | chunk-size | chunk-data | trailer | dead
        self.remaining = 0

    def feed(self, data):
        if self.state == "dead":
            return
        self.buf += data
        try:
            while self._step():
                pass
        except (ValueError, IndexError):
            # Not HTTP we understand (or a client we cannot follow): stop counting this stream.
            self.state = "dead"
            self.buf = b""

    def _step(self):
        if self.state == "head":
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > 1 << 16:
                    raise ValueError("header too large")
                return False
            head = self.buf[:end].decode("latin-1")
            self.buf = self.buf[end + 4:]
            lines = head.split("\r\n")
            method, target, _version = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
            self.on_request(method, target)
            if "chunked" in headers.get("transfer-encoding", "").lower():
                self.state = "chunk-size"
            else:
                self.remaining = int(headers.get("content-length", "0") or "0")
                self.state = "body" if self.remaining > 0 else "head"
            return True
        if self.state == "body":
            take = min(self.remaining, len(self.buf))
            self.buf = self.buf[take:]
            self.remaining -= take
            if self.remaining == 0:
                self.state = "head"
                return True
            return False
        if self.state == "chunk-size":
            end = self.buf.find(b"\r\n")
            if end < 0:
                return False
            size = int(self.buf[:end].split(b";", 1)[0].strip() or b"0", 16)
            self.buf = self.buf[end + 2:]
            if size == 0:
                self.state = "trailer"
            else:
                self.remaining = size + 2  # data + CRLF
                self.state = "chunk-data"
            return True
        if self.state == "chunk-data":
            take = min(self.remaining, len(self.buf))
            self.buf = self.buf[take:]
            self.remaining -= take
            if self.remaining == 0:
                self.state = "chunk-size"
                return True
            return False
        if self.state == "trailer":
            end = self.buf.find(b"\r\n")
            if end < 0:
                return False
            line = self.buf[:end]
            self.buf = self.buf[end + 2:]
            if line == b"":
                self.state = "head"
            return True
        return False


class _Scheduler:
    """One thread that performs delayed sends in deadline order for all connections."""

    def __init__(self):
        self.heap = []
        self.seq = 0
        self.cv = threading.Condition()
        self.stopped = False
        self.thread = threading.Thread(target=self._run, name="netproxy-scheduler", daemon=True)
        self.thread.start()

    def at(self, deadline, fn):
        with self.cv:
            self.seq += 1
            heapq.heappush(self.heap, (deadline, self.seq, fn))
            self.cv.notify()

    def stop(self):
        with self.cv:
            self.stopped = True
            self.cv.notify()

    def _run(self):
        while True:
            with self.cv:
                while not self.stopped and (not self.heap or self.heap[0][0] > time.monotonic()):
                    timeout = None if not self.heap else max(0.0, self.heap[0][0] - time.monotonic())
                    self.cv.wait(timeout)
                if self.stopped:
                    return
                _, _, fn = heapq.heappop(self.heap)
            try:
                fn()
            except OSError:
                pass


class LatencyProxy:
    """Listens on 127.0.0.1:<port> and forwards to 127.0.0.1:<upstream_port>."""

    def __init__(self, upstream_port, name):
        self.name = name
        self.upstream_port = upstream_port
        self.rtt = 0.0
        self.handshake = False
        self.lock = threading.Lock()
        self.counts = collections.Counter()
        self.times = []  # (monotonic arrival time, kind) of each request
        self.connections = 0
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(512)
        self.port = self.listener.getsockname()[1]
        self.stopped = False
        self.open = set()
        self.scheduler = _Scheduler()
        self.thread = threading.Thread(target=self._accept, name=f"netproxy-{name}", daemon=True)
        self.thread.start()

    def set_rtt_ms(self, ms):
        self.rtt = ms / 1000.0

    def take_counts(self):
        """The counts since the last call (and the number of new connections), then zero."""
        with self.lock:
            counts = dict(self.counts)
            counts["connections"] = self.connections
            self.counts.clear()
            self.connections = 0
        return counts

    def take_times(self):
        with self.lock:
            out, self.times = self.times, []
        return out

    def _count(self, method, target):
        kind = classify(method, target)
        with self.lock:
            self.counts[kind] += 1
            self.times.append((time.monotonic(), kind))

    def close(self):
        self.stopped = True
        try:
            self.listener.close()
        except OSError:
            pass
        for s in list(self.open):
            try:
                s.close()
            except OSError:
                pass
        self.scheduler.stop()

    def _accept(self):
        while not self.stopped:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client):
        try:
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=10)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        for s in (client, upstream):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.open.add(s)
        with self.lock:
            self.connections += 1
        parser = RequestParser(self._count)
        handshake = self.rtt if self.handshake else 0.0
        up = threading.Thread(
            target=self._pump, args=(client, upstream, parser, handshake), daemon=True
        )
        up.start()
        self._pump(upstream, client, None, 0.0)
        up.join()
        for s in (client, upstream):
            self.open.discard(s)
            s.close()

    def _pump(self, src, dst, parser, first_extra):
        """Copies src to dst; each chunk is sent RTT/2 after it was read (plus first_extra once)."""
        extra = first_extra
        last_deadline = 0.0
        done = threading.Event()
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if parser is not None and data:
                parser.feed(data)
            delay = self.rtt / 2 + extra
            extra = 0.0
            if delay <= 0 and last_deadline <= time.monotonic():
                if not data:
                    break
                try:
                    dst.sendall(data)
                except OSError:
                    break
                continue
            # Keep order: a chunk never overtakes the previous one.
            deadline = max(time.monotonic() + delay, last_deadline)
            last_deadline = deadline
            if not data:
                self.scheduler.at(deadline, done.set)
                break
            self.scheduler.at(deadline, lambda d=data: dst.sendall(d))
        if not done.is_set() and last_deadline > 0:
            done.wait(timeout=max(0.0, last_deadline - time.monotonic()) + 5)
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass
