"""Fixtures for the status-page tests: the real daemon binary, real containers on the local engine,
Debian's chromium driven by playwright (no browser download: `executable_path`).

Everything created is named with a unique `wdtest-ui-` prefix and removed at teardown.
"""

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("WATCH_BIN", ROOT / "target" / "debug" / "watch-docker"))
SHOTS = ROOT / "target" / "ui-screenshots"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# As root chromium needs --no-sandbox; the network is closed, so nothing may phone home.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
PREFIX = f"wdtest-ui-{os.getpid()}-{secrets.token_hex(3)}"
# Every container of this suite carries it, and the suite's daemons check only those: other tests'
# containers on the shared engine (and their registries) are left alone.
OWN_LABEL = f"wdtest.ui={PREFIX}"
XSS = "<img src=x onerror=alert(1)>"
TOKEN = "adm-" + secrets.token_hex(12)

# Written into the page before any script of its own: records CSP violations.
CSP_PROBE = """
window.__csp = [];
document.addEventListener('securitypolicyviolation',
  e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));
"""

DOCKERFILE = """FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
ARG V=1
RUN echo "$V" > /version
CMD ["/bin/sh", "-c", "trap 'exit 0' TERM; sleep 86400 & wait"]
"""


def docker(*args, check=True):
    r = subprocess.run(["docker", *args], capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)}: {r.stderr.strip()}")
    return r.stdout.strip()


def build_image(tag, version="1"):
    """A busybox-only image, built offline (no registry, no BuildKit)."""
    with tempfile.TemporaryDirectory(prefix="wdtest-ui-") as d:
        shutil.copy("/bin/busybox", Path(d) / "busybox")
        (Path(d) / "Dockerfile").write_text(DOCKERFILE)
        r = subprocess.run(
            ["docker", "build", "-q", "--build-arg", f"V={version}", "-t", tag, d],
            capture_output=True,
            text=True,
            env={**os.environ, "DOCKER_BUILDKIT": "0"},
        )
        if r.returncode != 0:
            raise RuntimeError(f"docker build {tag}: {r.stderr.strip()}")


def wait_for(what, fn, timeout=30.0, interval=0.1):
    """Polls `fn` until it returns something truthy; fails naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except Exception as e:  # noqa: BLE001 - the last error is reported below
            last = e
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, url, token=None):
    """(status, headers, parsed JSON or raw bytes)."""
    req = urllib.request.Request(url, method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            status, headers, body = r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        status, headers, body = e.code, e.headers, e.read()
    try:
        return status, headers, json.loads(body)
    except ValueError:
        return status, headers, body


class Daemon:
    """`watch-docker serve` on a free loopback port, with `--set` overrides, in an empty directory
    (so no ./config.yaml is picked up)."""

    def __init__(self, *sets):
        if not BIN.exists():
            raise RuntimeError(f"{BIN} is missing: run `cargo build` first")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.dir = tempfile.mkdtemp(prefix="wdtest-ui-daemon-")
        self.log = open(Path(self.dir) / "daemon.log", "w+b")
        args = [str(BIN), "serve", "--addr", f"127.0.0.1:{self.port}", "--set", f"policy.onlyLabels={OWN_LABEL}"]
        for s in sets:
            args += ["--set", s]
        env = {k: v for k, v in os.environ.items() if not k.startswith("WATCH_")}
        self.proc = subprocess.Popen(args, cwd=self.dir, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        wait_for("the daemon's /healthz", self._healthy, timeout=30)

    def _healthy(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"daemon exited with {self.proc.returncode}: {self.output()}")
        try:
            return http("GET", self.url + "/healthz")[0] == 200
        except OSError:
            return False

    def output(self):
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-4000:]

    def api(self, method, path, token=None):
        return http(method, self.url + path, token)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def image():
    tag = f"{PREFIX}-img:1"
    build_image(tag)
    yield tag
    docker("rmi", "-f", tag, check=False)


def remove_images_of_this_run():
    """Every image whose repository names this run (pushed, pulled or left by an update)."""
    out = docker("images", "--no-trunc", "--format", "{{.Repository}} {{.ID}}", check=False)
    ids = sorted({line.split()[1] for line in out.splitlines() if PREFIX in line and len(line.split()) == 2})
    if ids:
        docker("rmi", "-f", *ids, check=False)


def remove_containers():
    ids = docker("ps", "-aq", "--filter", f"name={PREFIX}", check=False).split()
    if ids:
        docker("rm", "-f", *ids, check=False)


@pytest.fixture(scope="session")
def containers(image):
    """Three running containers: plain; hostile labels (one is the compose project); policy notify."""
    specs = {
        f"{PREFIX}-plain": [],
        f"{PREFIX}-xss": ["--label", f"com.docker.compose.project={XSS}", "--label", f"wdtest.note={XSS}"],
        f"{PREFIX}-notify": ["--label", "watchdocker.policy=notify"],
    }
    try:
        for name, extra in specs.items():
            docker("run", "-d", "--name", name, "--label", OWN_LABEL, *extra, image)
        yield list(specs)
    finally:
        remove_containers()


def wait_listed(daemon, names, token):
    def listed():
        status, _, body = daemon.api("GET", "/api/containers", token)
        return status == 200 and set(names) <= {c["name"] for c in body["data"]}

    wait_for(f"{names} in GET /api/containers", listed)


@pytest.fixture(scope="session")
def daemon(containers):
    d = Daemon(f"server.token={TOKEN}")
    try:
        wait_listed(d, containers, TOKEN)
        yield d
    finally:
        d.stop()


@pytest.fixture(scope="session")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


# Waits go through locators (playwright's own world): `wait_for_function` evaluates a string in the
# page, which the page's CSP rightly refuses ('unsafe-eval').
def wait_live(page):
    page.locator("#conn", has_text=re.compile("^live")).wait_for()


def wait_closed(page, dialog):
    page.wait_for_selector(f"#{dialog}[open]", state="detached")


class Watched:
    """A page with everything it does recorded: requests, dialogs, console messages."""

    def __init__(self, browser, **ctx):
        self.context = browser.new_context(**ctx)
        self.context.add_init_script(CSP_PROBE)
        self.page = self.context.new_page()
        self.requests, self.dialogs, self.console = [], [], []
        self.page.on("request", lambda r: self.requests.append(r))
        self.page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))

        def on_dialog(d):
            self.dialogs.append(d.message)
            d.dismiss()

        self.page.on("dialog", on_dialog)

    def open(self, daemon):
        self.page.goto(daemon.url + "/")
        wait_live(self.page)
        return self.page

    def csp_violations(self):
        probe = self.page.evaluate("window.__csp || []")
        logged = [m for m in self.console if "Content Security Policy" in m or "Refused to" in m]
        return probe + logged

    def close(self):
        self.context.close()


@pytest.fixture
def watched(browser):
    made = []

    def make(**ctx):
        w = Watched(browser, **ctx)
        made.append(w)
        return w

    yield make
    for w in made:
        w.close()


@pytest.fixture(scope="session", autouse=True)
def nothing_left_behind():
    """After the whole suite: no container and no image of this run remains on the engine."""
    yield
    remove_containers()
    remove_images_of_this_run()
