"""The local Docker Engine: a small client of its API over the unix socket (creating hundreds of
containers through the CLI would spend most of the time starting CLI processes), plus the `docker`
CLI for build, push and pull. Everything the benchmark creates carries the label
`wdbench.run=<run id>` and a `wdbench-` name, so cleanup can find it, even after a killed run.
"""

import http.client
import json
import os
import socket
import subprocess
import urllib.parse

SOCKET = "/var/run/docker.sock"
LABEL = "wdbench.run"

# The command of every fixture container: idle, and exits at once on SIGTERM (a PID 1 shell
# ignores TERM unless it traps it, which would make every stop wait for the whole timeout).
IDLE_CMD = ["/bin/sh", "-c", "trap 'exit 0' TERM INT; sleep 2147483647 & wait"]


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout=120):
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


class EngineError(Exception):
    pass


def api(method, path, body=None, timeout=120):
    """One Engine API call; returns (status, parsed JSON or text)."""
    conn = UnixConnection(SOCKET, timeout)
    try:
        headers = {}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
        try:
            return resp.status, json.loads(raw) if raw else None
        except ValueError:
            return resp.status, raw.decode(errors="replace")
    finally:
        conn.close()


def q(params):
    return urllib.parse.urlencode(params)


def run_container(name, image, run_id, network="none", extra_labels=None, host_config=None):
    """Creates and starts a container; returns its id."""
    labels = {LABEL: run_id}
    labels.update(extra_labels or {})
    hc = {"NetworkMode": network}
    hc.update(host_config or {})
    status, body = api("POST", "/containers/create?" + q({"name": name}),
                       {"Image": image, "Cmd": IDLE_CMD, "Labels": labels, "HostConfig": hc})
    if status != 201:
        raise EngineError(f"create container {name} from {image}: {status} {body}")
    cid = body["Id"]
    status, body = api("POST", f"/containers/{cid}/start")
    if status not in (204, 304):
        raise EngineError(f"start container {name}: {status} {body}")
    return cid


def containers_of_run(run_id, all_states=True):
    filters = json.dumps({"label": [f"{LABEL}={run_id}"]})
    status, body = api("GET", "/containers/json?" + q({"all": "1" if all_states else "0", "filters": filters}))
    return body if status == 200 else []


def remove_container(cid):
    api("DELETE", f"/containers/{cid}?" + q({"force": "1", "v": "1"}))


def remove_containers(run_id, workers=8):
    from concurrent.futures import ThreadPoolExecutor
    ids = [c["Id"] for c in containers_of_run(run_id)]
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(remove_container, ids))
    return len(ids)


def images_of_run(run_id):
    filters = json.dumps({"label": [f"{LABEL}={run_id}"]})
    status, body = api("GET", "/images/json?" + q({"filters": filters}))
    return body if status == 200 else []


def remove_images(run_id):
    """Removes every image labelled with this run (all their tags); children before parents, so
    a few passes."""
    removed = set()
    for _ in range(5):
        left = images_of_run(run_id)
        if not left:
            break
        for img in left:
            status, _ = api("DELETE", f"/images/{img['Id']}?" + q({"force": "1", "noprune": "0"}))
            if status == 200:
                removed.add(img["Id"])
    return len(removed)


def stale_runs():
    """Run ids (label values) of benchmark objects whose owning process is gone."""
    runs = set()
    status, body = api("GET", "/containers/json?" + q({"all": "1", "filters": json.dumps({"label": [LABEL]})}))
    for c in body if status == 200 else []:
        runs.add(c.get("Labels", {}).get(LABEL, ""))
    status, body = api("GET", "/images/json?" + q({"filters": json.dumps({"label": [LABEL]})}))
    for i in body if status == 200 else []:
        runs.add((i.get("Labels") or {}).get(LABEL, ""))
    stale = []
    for r in runs:
        # Run ids are <pid>-<random>; the run is stale when that pid is not alive.
        pid = r.split("-", 1)[0]
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                alive = b"bench/run" in f.read()
        except OSError:
            alive = False
        if pid.isdigit() and not alive:
            stale.append(r)
    return stale


def events(run_id, since, until):
    """Container events of this run between two unix times (float)."""
    filters = json.dumps({"type": ["container"], "label": [f"{LABEL}={run_id}"]})
    conn = UnixConnection(SOCKET, 30)
    try:
        conn.request("GET", "/events?" + q({"since": f"{since:.9f}", "until": f"{until:.9f}", "filters": filters}))
        resp = conn.getresponse()
        raw = resp.read().decode()
    finally:
        conn.close()
    out = []
    dec = json.JSONDecoder()
    i = 0
    while i < len(raw):
        while i < len(raw) and raw[i].isspace():
            i += 1
        if i >= len(raw):
            break
        obj, i = dec.raw_decode(raw, i)
        out.append(obj)
    return out


def cli(*args, env=None, check=True, timeout=600):
    """Runs `docker ARGS`; returns stdout. Raises EngineError with stderr on failure."""
    e = dict(os.environ)
    e.update(env or {})
    p = subprocess.run(["docker", *args], capture_output=True, text=True, env=e, timeout=timeout,
                       stdin=subprocess.DEVNULL)
    if check and p.returncode != 0:
        raise EngineError(f"docker {' '.join(args)}: {p.stderr.strip() or p.stdout.strip()}")
    return p.stdout


def build(context, tag):
    """Legacy builder (works offline with FROM scratch; BuildKit may be missing)."""
    return cli("build", "-q", "--force-rm", "-t", tag, context, env={"DOCKER_BUILDKIT": "0"})
