"""The status page (`GET /`) in a real browser against the real daemon and real containers.

Run: `cargo build && python3 -m pytest -q tests/ui` (needs Debian's chromium, `pip install playwright
pytest`, and the Docker engine). `WATCH_UI_FULL=1` adds the end-to-end update through the page,
which needs the registry fixture and the update endpoints.
"""

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import urllib.request
from pathlib import Path

import pytest

from conftest import (
    OWN_LABEL,
    remove_images_of_this_run,
    PREFIX,
    SHOTS,
    TOKEN,
    XSS,
    Daemon,
    build_image,
    docker,
    free_port,
    wait_closed,
    wait_for,
    wait_listed,
    wait_live,
)

BADGE_TEXT = {
    "UpToDate": "up to date",
    "UpdateAvailable": "update available",
    "Skipped": "skipped",
    "Error": "error",
    "Unknown": "not checked",
}


def filter_to(page, text):
    page.fill("#f-text", text)


def page_rows(page):
    """name → (row status, badge status, badge text, image text, compose text) of the visible rows."""
    return page.eval_on_selector_all(
        "#rows tr",
        """rows => Object.fromEntries(rows.map(r => [
            r.querySelector('td.name strong').textContent,
            [r.dataset.status, r.querySelector('.badge').dataset.status,
             r.querySelector('.badge').textContent, r.querySelector('td.img').textContent,
             r.querySelector('td.cmp').textContent]]))""",
    )


def enter_token(page, admin="", read=""):
    page.click("#tokbtn")
    page.fill("#t-admin", admin)
    page.fill("#t-read", read)
    page.press("#t-admin", "Enter")
    wait_closed(page, "tok")


def test_headers_and_inline_blocks_match_the_csp(daemon):
    status, headers, body = daemon.api("GET", "/")
    assert status == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["X-Frame-Options"] == "DENY"
    csp = headers["Content-Security-Policy"]
    assert "unsafe-inline" not in csp and "default-src 'none'" in csp and "connect-src 'self'" in csp
    html = body.decode()
    assert len(body) <= 30 * 1024
    for tag, directive in (("script", "script-src"), ("style", "style-src")):
        blocks = re.findall(rf"<{tag}>(.*?)</{tag}>", html, re.S)
        assert len(blocks) == 1, tag
        digest = base64.b64encode(hashlib.sha256(blocks[0].encode()).digest()).decode()
        assert f"{directive} 'sha256-{digest}'" in csp


def test_server_ui_false_turns_the_page_off():
    d = Daemon("server.ui=false")
    try:
        status, _, body = d.api("GET", "/")
        assert (status, body["code"]) == (404, 40400)
        assert "server.ui" in body["msg"]
        assert d.api("GET", "/healthz")[0] == 200
    finally:
        d.stop()


def test_rows_and_badges_match_the_api(daemon, containers, watched):
    w = watched()
    page = w.open(daemon)
    filter_to(page, PREFIX)

    def matches():
        _, _, body = daemon.api("GET", "/api/containers", TOKEN)
        want = {
            c["name"]: [c["status"], c["status"], BADGE_TEXT[c["status"]], c["image"], c["composeProject"] or "—"]
            for c in body["data"]
            if c["name"].startswith(PREFIX)
        }
        got = page_rows(page)
        return got if got == want and len(got) == len(containers) else None

    wait_for("the page's rows to match GET /api/containers", matches)
    counts = page.text_content("#counts")
    assert "containers" in counts
    assert not w.csp_violations()
    assert not w.dialogs


def test_hostile_label_is_shown_as_text(daemon, containers, watched):
    w = watched()
    page = w.open(daemon)
    filter_to(page, f"{PREFIX}-xss")
    row = page.locator("#rows tr", has_text=f"{PREFIX}-xss")
    row.wait_for()
    assert row.locator("td.cmp").text_content() == XSS
    row.locator("summary").click()
    assert f"wdtest.note={XSS}" in row.locator("details").text_content()
    # The text stayed text: no element was made from it, no handler ran.
    assert page.locator("#rows img").count() == 0
    assert page.locator("img").count() == 0
    assert w.dialogs == []
    assert not w.csp_violations()


def test_without_a_token_the_page_is_read_only_and_says_why(daemon, containers, watched):
    w = watched()
    page = w.open(daemon)
    filter_to(page, PREFIX)
    page.locator("#rows tr").first.wait_for()
    assert page.is_disabled("#scan") and page.is_disabled("#runall")
    for b in page.locator("#rows button").all():
        assert b.is_disabled()
    reason = page.text_content("#ro")
    assert "Read-only" in reason and "admin token" in reason
    assert "admin token" in page.get_attribute("#scan", "title")


def test_the_token_entered_is_sent_with_scan_now(daemon, containers, watched):
    w = watched()
    page = w.open(daemon)
    enter_token(page, admin=TOKEN)
    wait_for("enabled buttons", lambda: page.is_enabled("#scan") and page.is_enabled("#runall"))
    assert page.text_content("#ro") == ""
    page.click("#scan")
    page.wait_for_selector("#confirm[open]")
    assert "Nothing is pulled, stopped or changed" in page.text_content("#c-body")
    with page.expect_response(lambda r: r.url.endswith("/api/scan")) as resp:
        page.click("#c-ok")
    r = resp.value
    assert r.request.method == "POST"
    assert r.request.headers.get("authorization") == f"Bearer {TOKEN}"
    # 202 once the scan endpoint exists; 501 from a daemon without it. Either way an outcome shows.
    assert r.status in (202, 501), r.status
    entry = page.locator("#log li").first
    wait_for("the scan's outcome", lambda: re.search(r"Scan: (done|failed|not available)", entry.text_content()),
             timeout=120)
    # Only the session keeps the token.
    assert page.evaluate("localStorage.length") == 0
    assert page.evaluate("sessionStorage.getItem('wd.admin')") == TOKEN
    assert not w.csp_violations()


def test_a_wrong_token_is_reported_and_forgotten(daemon, containers, watched):
    w = watched()
    page = w.open(daemon)
    enter_token(page, admin="not-the-token")
    page.click("#scan")
    page.click("#c-ok")
    entry = page.locator("#log li").first
    wait_for("the 401 message", lambda: "rejected (401)" in entry.text_content())
    wait_for("the buttons to be disabled again", lambda: page.is_disabled("#scan"))


def test_protected_reads_ask_for_the_read_token(containers, watched):
    d = Daemon(f"server.token={TOKEN}", "server.readToken=rd-secret")
    try:
        wait_listed(d, containers, "rd-secret")
        w = watched()
        page = w.page
        page.goto(d.url + "/")
        page.wait_for_selector("#tok[open]")
        assert "read token" in page.text_content("#t-why")
        page.fill("#t-read", "rd-secret")
        page.press("#t-read", "Enter")
        filter_to(page, PREFIX)
        wait_for("rows after the read token", lambda: page.locator("#rows tr").count() == len(containers))
        # A read token alone does not allow actions.
        assert page.is_disabled("#scan")
    finally:
        d.stop()


def test_only_the_same_origin_is_contacted(daemon, containers, watched):
    w = watched()
    page = w.open(daemon)
    enter_token(page, admin=TOKEN)
    page.locator("#rows tr").first.wait_for()
    wait_live(page)
    urls = [r.url for r in w.requests]
    assert urls, "no request recorded"
    foreign = [u for u in urls if not (u.startswith(daemon.url + "/") or u.startswith("data:"))]
    assert foreign == []
    assert any(u.endswith("/api/containers") for u in urls)


def test_an_unreachable_daemon_is_shown(containers, watched):
    d = Daemon(f"server.token={TOKEN}")
    try:
        w = watched()
        page = w.open(d)
        d.stop()
        page.wait_for_selector("#daemon-down:not([hidden])", timeout=30_000)
        assert page.text_content("#conn") == "daemon unreachable"
        assert "unreachable" in page.text_content("#daemon-down")
    finally:
        d.stop()


@pytest.mark.parametrize(
    "name,size,scheme",
    [("desktop", (1280, 800), "light"), ("phone", (390, 844), "light"), ("phone-dark", (390, 844), "dark")],
)
def test_screenshots(daemon, containers, watched, name, size, scheme):
    w = watched(viewport={"width": size[0], "height": size[1]}, color_scheme=scheme)
    page = w.open(daemon)
    enter_token(page, admin=TOKEN)
    filter_to(page, PREFIX)
    wait_for("the rows", lambda: page.locator("#rows tr").count() == len(containers))
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
    # Nothing sticks out sideways.
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")


class Registry:
    """Debian's docker-registry on a free loopback port with its own storage."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="wdtest-ui-registry-")
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        cfg = Path(self.dir) / "config.yml"
        cfg.write_text(
            f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {self.dir}/data\n"
            f"http:\n  addr: {self.host}\n"
        )
        self.proc = subprocess.Popen(
            ["docker-registry", "serve", str(cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

        def up():
            with urllib.request.urlopen(f"http://{self.host}/v2/", timeout=2) as r:
                return r.status == 200

        wait_for("the registry", up)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=20)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.mark.skipif(os.environ.get("WATCH_UI_FULL") != "1", reason="needs the update endpoints: WATCH_UI_FULL=1")
def test_update_from_the_page_recreates_the_container(watched):
    reg = Registry()
    ref = f"{reg.host}/{PREFIX}/app:1"
    name = f"{PREFIX}-upd"
    d = None
    images = []
    try:
        build_image(ref, version="1")
        images.append(docker("inspect", "-f", "{{.Id}}", ref))
        docker("push", ref)
        docker("run", "-d", "--name", name, "--label", OWN_LABEL, ref)
        old_id = docker("inspect", "-f", "{{.Id}}", name)
        build_image(ref, version="2")
        images.append(docker("inspect", "-f", "{{.Id}}", ref))
        docker("push", ref)

        d = Daemon(f"server.token={TOKEN}")
        wait_listed(d, [name], TOKEN)
        w = watched()
        page = w.open(d)
        enter_token(page, admin=TOKEN)
        filter_to(page, name)
        page.click("#scan")
        page.click("#c-ok")
        row = page.locator(f"#rows tr[data-status]", has_text=name)
        wait_for("UpdateAvailable", lambda: row.get_attribute("data-status") == "UpdateAvailable", timeout=120)
        row.locator("button.upd").click()
        page.wait_for_selector("#confirm[open]")
        assert name in page.text_content("#c-body")
        page.click("#c-ok")
        wait_for("UpToDate", lambda: page.locator("#rows tr", has_text=name).get_attribute("data-status") == "UpToDate",
                 timeout=300)
        new_id = docker("inspect", "-f", "{{.Id}}", name)
        assert new_id != old_id
        # The row can turn UpToDate (periodic refresh) before the page's job poll reports the end.
        wait_for("the update outcome in the log",
                 lambda: re.search(rf"{re.escape(name)} updated", page.text_content("#log")), timeout=60)
    finally:
        if d:
            d.stop()
        docker("rm", "-f", name, check=False)
        # v1 loses its tag to v2 but keeps its repo digest: remove both by id, and whatever else
        # still names this run's repository.
        docker("rmi", "-f", ref, *images, check=False)
        remove_images_of_this_run()
        reg.stop()


def contract_containers():
    """Rows shaped like GET /api/containers, one per status, with every optional field used."""
    base = {
        "running": True, "skipped": False, "skipReason": None, "labels": {}, "imageId": "sha256:" + "1" * 64,
        "state": "running", "error": None, "composeProject": None, "composeService": None,
        "updatePolicy": "auto", "updatePolicyReason": None, "lastUpdatedAt": None, "previousImage": None,
        "lastCheckedAt": "2026-11-29T06:30:00Z", "currentDigest": "sha256:" + "a" * 64,
        "remoteDigest": "sha256:" + "a" * 64,
    }
    rows = [
        {"id": "1" * 64, "name": "web", "image": "registry.test/web:1.1", "status": "UpdateAvailable",
         "remoteDigest": "sha256:" + "b" * 64, "newerVersions": ["1.2.0", "2.0.0"],
         "previousImage": "registry.test/web:1.0"},
        {"id": "2" * 64, "name": "db", "image": "registry.test/db:16", "status": "Error",
         "error": "HEAD registry.test/db:16: registry answered 401", "currentDigest": None, "remoteDigest": None},
        {"id": "3" * 64, "name": "cache", "image": "registry.test/cache:7", "status": "UpdateAvailable",
         "remoteDigest": "sha256:" + "c" * 64, "composeProject": "shop", "composeService": "cache"},
        {"id": "4" * 64, "name": "proxy", "image": "registry.test/proxy@sha256:" + "d" * 64, "status": "Skipped",
         "skipped": True, "skipReason": "pinned by digest", "updatePolicy": "skip",
         "updatePolicyReason": "pinned by digest"},
        {"id": "5" * 64, "name": "metrics", "image": "registry.test/metrics:3", "status": "UpToDate",
         "updatePolicy": "notify", "updatePolicyReason": "label watchdocker.policy=notify"},
    ]
    return [{**base, **r} for r in rows]


class StubApi:
    """Answers the page's /api/* calls in the browser, as the API contract says the daemon will."""

    def __init__(self):
        self.containers = contract_containers()
        self.polls = 0
        self.posts = []

    def reply(self, route, status, data, code=0, msg="ok"):
        route.fulfill(status=status, content_type="application/json",
                      body=json.dumps({"code": code, "msg": msg, "data": data}))

    def __call__(self, route):
        req = route.request
        path = req.url.split("://", 1)[1].split("/", 1)[1]
        path = "/" + path.split("?")[0]
        if req.method == "POST":
            self.posts.append((path, req.headers.get("authorization")))
        job = {"kind": "scan", "trigger": "schedule", "schedule": "every 6h", "running": False,
               "lastStart": "2026-11-29T06:00:00Z", "lastEnd": "2026-11-29T06:00:04Z", "durationMs": 4000,
               "outcome": "succeeded", "skippedTicks": 0, "lastError": None,
               "counts": {"checked": 5, "updatesFound": 2, "updated": 0, "failed": 0, "rolledBack": 0}}
        if path == "/api/containers":
            return self.reply(route, 200, self.containers)
        if path == "/api/jobs":
            return self.reply(route, 200, [{**job, "id": "scan", "nextRun": "2026-11-29T12:00:00Z"},
                                           {**job, "id": "update", "kind": "update", "nextRun": None}])
        if path == "/api/registries":
            return self.reply(route, 200, [{"host": "registry.test", "requests": 12, "errors": 1,
                                            "rateLimitRemaining": 88, "pausedUntil": None,
                                            "lastError": "HEAD registry.test/db:16: 401"}])
        if path == "/api/containers/" + "1" * 64 + "/update":
            return self.reply(route, 202, {"jobId": "run-7"}, msg="accepted")
        if path == "/api/jobs/run-7":
            self.polls += 1
            result = {"container": "web", "id": "1" * 64, "outcome": "rolledBack",
                      "error": "the new container exited with code 1", "fromImage": "registry.test/web:1.1",
                      "toImage": "registry.test/web:1.1"}
            return self.reply(route, 200, {**job, "id": "run-7", "kind": "update", "trigger": "api",
                                           "running": self.polls < 2, "outcome": "failed",
                                           "results": [result]})
        if path.endswith("/rollback"):
            return self.reply(route, 409, None, 40900, "web is already being updated")
        if path == "/api/updates/run":
            return self.reply(route, 403, None, 40300, "mutating endpoints are disabled because no admin "
                              "token is configured: set server.token (WATCH_SERVER_TOKEN)")
        return self.reply(route, 404, None, 40400, "no endpoint")


def test_contract_shaped_data_and_action_outcomes(daemon, watched):
    """The page against the API contract (jobs, registries, update outcomes, 403/409), with /api/*
    answered in the browser: the summary, sorting, filtering, and each outcome in words."""
    w = watched(viewport={"width": 1280, "height": 900})
    stub = StubApi()
    w.page.route("**/api/**", stub)
    page = w.open(daemon)
    enter_token(page, admin=TOKEN)
    page.locator("#rows tr").first.wait_for()
    summary = page.text_content("#summary")
    assert "88 requests left" in summary and "registry.test" in summary
    assert "Next scan" in summary and "5 containers" in summary
    assert page.text_content("[data-count=UpdateAvailable]") == "2 update available"
    # Digests are short, with the full digest on hover.
    web = page.locator("#rows tr", has_text="registry.test/web")
    assert web.locator("td.dig code").first.text_content() == "a" * 12
    assert web.locator("td.dig code").first.get_attribute("title") == "sha256:" + "a" * 64
    assert web.locator("td.dig").text_content() == "a" * 12 + " → " + "b" * 12
    assert web.locator("td.dig code").last.get_attribute("title") == "sha256:" + "b" * 64
    assert "1.2.0, 2.0.0" in web.locator("td.nv").text_content()

    page.select_option("#f-sort", "status")
    names = page.eval_on_selector_all("#rows td.name strong", "e => e.map(x => x.textContent)")
    assert names == ["db", "cache", "web", "proxy", "metrics"]
    page.select_option("#f-status", "UpdateAvailable")
    assert page.locator("#rows tr").count() == 2
    page.select_option("#f-status", "")
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "desktop-full.png"), full_page=True)

    # Keyboard: focus stays on its control when the periodic refresh brings new data.
    web.locator("button.upd").focus()
    stub.containers = [{**c, "lastCheckedAt": "2026-11-29T06:40:00Z"} for c in stub.containers]
    wait_for("the refreshed row", lambda: "2026-11-29T06:40:00Z" in (web.locator("time").get_attribute("title") or ""))
    assert page.evaluate("document.activeElement.getAttribute('aria-label')") == "Update web"
    # Update one, from the keyboard: confirmation, progress, then the outcome with the reason.
    page.keyboard.press("Enter")
    body = page.text_content("#c-body")
    assert "registry.test/web:1.1" in body and "put back automatically" in body
    page.click("#c-ok")
    entry = page.locator("#log li").first
    wait_for("the update outcome", lambda: "rolled back" in entry.text_content())
    assert "the new container exited with code 1" in entry.text_content()
    assert entry.get_attribute("class") == "fail"
    assert stub.posts[0] == ("/api/containers/" + "1" * 64 + "/update", f"Bearer {TOKEN}")

    # Roll back while busy elsewhere: the 409 is said as such.
    web.locator("button.rb").click()
    assert "registry.test/web:1.0" in page.text_content("#c-body")
    page.click("#c-ok")
    wait_for("the 409 message", lambda: "already running or being updated (409)" in entry.text_content())

    # Update all: the confirmation names the eligible ones and leaves compose alone; a 403 makes
    # the page read-only with the server's reason.
    page.click("#runall")
    body = page.text_content("#c-body")
    assert "web" in body and "Compose containers are left alone (cache)" in body
    page.screenshot(path=str(SHOTS / "desktop-confirm.png"))
    page.keyboard.press("Escape")
    wait_closed(page, "confirm")
    assert len(stub.posts) == 2, "Escape cancels"
    page.click("#runall")
    page.click("#c-ok")
    wait_for("the 403 message", lambda: "(403)" in entry.text_content())
    wait_for("read-only after 403", lambda: page.is_disabled("#scan"))
    assert "no admin token configured" in page.text_content("#ro")
    page.screenshot(path=str(SHOTS / "desktop-outcomes.png"))
    assert not w.csp_violations()


def test_phone_screenshot_with_contract_data(daemon, watched):
    w = watched(viewport={"width": 390, "height": 844}, color_scheme="dark")
    w.page.route("**/api/**", StubApi())
    page = w.open(daemon)
    page.locator("#rows tr").first.wait_for()
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "phone-full-dark.png"), full_page=True)
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    page.click("#tokbtn")
    page.screenshot(path=str(SHOTS / "phone-token-dark.png"))
