"""`watch-docker serve` under test: started with a clean environment (no config file, no WATCH_*
variables, no docker config of the user) and `--set` overrides, on a free loopback port; its API
spoken over plain HTTP/1.1; its resident memory read from /proc.
"""

import http.client
import json
import os
import socket
import subprocess
import time

from registry import die_with_parent, free_port

ADMIN_TOKEN = "wdbench-admin-token"
READ_TOKEN = "wdbench-read-token"


class Missing(Exception):
    """The daemon does not offer this feature yet (501, or a route it does not know)."""


class Daemon:
    instances = 0

    def __init__(self, binary, workdir, overrides, cpu=None):
        self.binary = binary
        self.port = free_port()
        self.addr = f"127.0.0.1:{self.port}"
        home = os.path.join(workdir, "home")
        os.makedirs(home, exist_ok=True)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": home}
        settings = {"server.addr": self.addr, "server.token": ADMIN_TOKEN, "server.readToken": READ_TOKEN,
                    "logging.level": "warn", "logging.format": "json"}
        settings.update(overrides)
        args = [binary, "serve"]
        for k, v in settings.items():
            args += ["--set", f"{k}={v}"]
        if cpu is not None:
            args = ["taskset", "-c", str(cpu)] + args
        Daemon.instances += 1
        self.log_path = os.path.join(workdir, f"daemon-{Daemon.instances}.log")
        log = open(self.log_path, "a")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(args, cwd=home, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                     stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
        log.close()

    # --- lifecycle -------------------------------------------------------------------------

    def wait_healthy(self, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"watch-docker exited ({self.proc.returncode}); log:\n{self.log()}")
            try:
                status, _ = self.request("GET", "/healthz", timeout=1)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.005)
        raise RuntimeError(f"watch-docker: no /healthz within {timeout}s; log:\n{self.log()}")

    def wait_containers(self, name_prefix, count, timeout=120.0):
        """Until /api/containers lists `count` containers whose name starts with name_prefix."""
        deadline = time.monotonic() + timeout
        seen = -1
        while time.monotonic() < deadline:
            status, body = self.request("GET", "/api/containers")
            if status == 200:
                seen = sum(1 for c in body.get("data") or [] if c.get("name", "").startswith(name_prefix))
                if seen >= count:
                    return body["data"]
            time.sleep(0.1)
        raise RuntimeError(f"watch-docker listed {seen} of {count} benchmark containers after {timeout}s")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log(self, tail=4000):
        try:
            with open(self.log_path) as f:
                text = f.read()
                return text[-tail:] if tail else text
        except OSError:
            return ""

    def log_records(self):
        """The JSON log lines written so far, parsed (other lines skipped)."""
        out = []
        for line in self.log(tail=0).splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    # --- memory ----------------------------------------------------------------------------

    def pid(self):
        return self.proc.pid

    def status_kib(self, field):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        raise RuntimeError(f"no {field} in /proc/{self.proc.pid}/status")

    def memory_note(self):
        """`RssAnon a, RssFile f, VmHWM h KiB, n threads` from /proc/<pid>/status."""
        anon, file_, hwm = (self.status_kib(k) for k in ("RssAnon", "RssFile", "VmHWM"))
        with open(f"/proc/{self.proc.pid}/status") as f:
            threads = next((line.split()[1] for line in f if line.startswith("Threads:")), "?")
        return f"RssAnon {anon}, RssFile {file_}, VmHWM {hwm} KiB, {threads} threads"

    def settled_rss_kib(self, quiet=1.0, timeout=10.0):
        """VmRSS once it has not changed for `quiet` seconds (or at the timeout)."""
        deadline = time.monotonic() + timeout
        last = self.status_kib("VmRSS")
        since = time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.1)
            now = self.status_kib("VmRSS")
            if now != last:
                last, since = now, time.monotonic()
            elif time.monotonic() - since >= quiet:
                break
        return last

    # --- API -------------------------------------------------------------------------------

    def request(self, method, path, body=None, token=READ_TOKEN, timeout=300):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            headers = {"Authorization": f"Bearer {token}"}
            data = None
            if body is not None:
                data = json.dumps(body).encode()
                headers["Content-Type"] = "application/json"
            elif method == "POST":
                data = b""
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
            try:
                parsed = json.loads(raw) if raw else None
            except ValueError:
                parsed = {"raw": raw.decode(errors="replace")}
            return resp.status, parsed
        finally:
            conn.close()

    def job(self, method, path, body=None, timeout=300):
        """Runs a job with ?wait=true; returns (wall seconds, reply data). When the daemon answers
        202 with a job id anyway, polls GET /api/jobs/:id until it finishes."""
        sep = "&" if "?" in path else "?"
        t0 = time.monotonic()
        status, reply = self.request(method, path + sep + "wait=true", body, token=ADMIN_TOKEN, timeout=timeout)
        if status == 501 or (status in (404, 405) and (reply or {}).get("code") in (40400, 40500)
                             and "no container" not in str((reply or {}).get("msg", ""))):
            raise Missing(f"{method} {path}: {status} {(reply or {}).get('msg', '')}")
        if status == 202:
            job_id = find_key(reply, ("id", "jobId"))
            deadline = time.monotonic() + timeout
            while job_id and time.monotonic() < deadline:
                s, j = self.request("GET", f"/api/jobs/{job_id}", token=ADMIN_TOKEN)
                data = (j or {}).get("data") or {}
                if s == 200 and (find_key(data, ("endedAt", "finishedAt", "end")) or
                                 str(find_key(data, ("outcome", "state", "status"))).lower()
                                 in ("ok", "succeeded", "success", "failed", "done", "finished")):
                    return time.monotonic() - t0, data
                time.sleep(0.01)
        wall = time.monotonic() - t0
        if status >= 300:
            raise RuntimeError(f"{method} {path}: HTTP {status}: {reply}")
        return wall, (reply or {}).get("data")


def find_key(obj, keys):
    """The first value under any of `keys`, searching nested objects breadth-first."""
    todo = [obj]
    while todo:
        o = todo.pop(0)
        if isinstance(o, dict):
            for k in keys:
                if k in o and o[k] is not None:
                    return o[k]
            todo.extend(v for v in o.values() if isinstance(v, (dict, list)))
        elif isinstance(o, list):
            todo.extend(v for v in o if isinstance(v, (dict, list)))
    return None


def time_to_healthz(binary, workdir, overrides):
    """Seconds from spawning `serve` to the first 200 from /healthz (tight connect loop)."""
    port = free_port()
    home = os.path.join(workdir, "home")
    os.makedirs(home, exist_ok=True)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": home}
    args = [binary, "serve", "--set", f"server.addr=127.0.0.1:{port}", "--set", "logging.level=warn"]
    for k, v in overrides.items():
        args += ["--set", f"{k}={v}"]
    request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    t0 = time.monotonic()
    proc = subprocess.Popen(args, cwd=home, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, preexec_fn=die_with_parent)
    try:
        deadline = t0 + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                    s.sendall(request)
                    head = s.recv(64)
                    if head.startswith(b"HTTP/1.1 200") or head.startswith(b"HTTP/1.0 200"):
                        return time.monotonic() - t0
            except OSError:
                pass
            if proc.poll() is not None:
                raise RuntimeError(f"watch-docker serve exited with {proc.returncode}")
        raise RuntimeError("no /healthz answer within 10s")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
