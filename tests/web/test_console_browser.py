"""The console and the big screen in a real browser (Debian's Chromium driven by Playwright),
against the real ``yungu server --demo`` (the world ``make run`` gives a new user: demo
tenant key, node agent, job trickle). Screenshots land in ``tests/web/artifacts/``.

Every test records every request the browser made and every console error: none may leave
127.0.0.1, none may be an error.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.server import ServerProcess, yungu_exe
from tests.web.browser import Watch, browser, chromium_path, shot

pytestmark = pytest.mark.slow

if chromium_path() is None:
    if os.environ.get("CI"):
        raise RuntimeError("CI needs Debian's chromium (Makefile system-deps installs it)")
    pytest.skip("Chromium not installed: apt-get install chromium (make system-deps)", allow_module_level=True)


class Demo:
    def __init__(self, srv: ServerProcess) -> None:
        self.srv, self.url = srv, srv.url
        self.admin_key = srv.admin_key
        self.tenant_key = (srv.data_dir / "demo-lab.key").read_text().strip()
        self.api = httpx.Client(base_url=self.url + "/api/v1", headers={"Authorization": f"Bearer {self.admin_key}"},
                                timeout=30)
        self.shared: dict[str, Any] = {}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    data = tmp_path_factory.mktemp("web") / "data"
    data.mkdir()
    srv = ServerProcess(data, extra=["--demo"])
    try:
        srv.start(timeout=120)  # a loaded CI machine can take a while to import and migrate
    except BaseException:
        srv.stop()  # never leave a half-started server (and its demo trickle) behind
        raise
    deadline = time.monotonic() + 20
    while not (data / "demo-lab.key").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    d = Demo(srv)
    try:
        yield d
    finally:
        d.api.close()
        srv.stop()


@pytest.fixture(scope="module")
def chrome() -> Iterator[Any]:
    with browser() as ctx:
        yield ctx


@pytest.fixture
def page(chrome: Any) -> Iterator[tuple[Any, Watch]]:
    chrome.clear_cookies()
    p = chrome.new_page()
    w = Watch()
    w.attach(p)
    yield p, w
    p.close()
    assert w.outside() == [], f"requests left 127.0.0.1: {w.outside()}"
    assert w.errors == [], f"console errors: {w.errors}"


def sign_in(p: Any, url: str, key: str) -> None:
    p.goto(url + "/")
    p.fill("#apikey", key)
    p.click("#signin")
    p.wait_for_selector(".cards")


def test_tenant_one_click_run_to_succeeded_with_live_log(demo: Demo, page: tuple[Any, Watch]) -> None:
    p, _w = page
    sign_in(p, demo.url, demo.tenant_key)
    assert p.locator("header nav a[data-nav=run]").inner_text() == "一键运行"  # Chinese by default
    shot(p, "console-overview-zh")
    p.goto(demo.url + "/#/run")
    p.wait_for_selector("#get-quote")
    before = len(demo.api.get("/jobs", params={"limit": 500}).json()["items"])
    p.click("#get-quote")
    p.wait_for_selector("#quote-table tbody tr")
    assert p.locator("#quote-table tbody tr").count() >= 2  # several options, one chosen
    assert p.locator("#quote-table tr.chosen").count() == 1
    shot(p, "console-run-quote")
    # the quote submitted nothing (demo trickle jobs may arrive meanwhile, but none named hello-horinger)
    names = [j["name"] for j in demo.api.get("/jobs", params={"limit": 500}).json()["items"]]
    assert names.count("hello-horinger") == 1 and len(names) >= before  # the one the demo submitted at start
    chosen_pool = p.locator("#quote-table tr.chosen input").get_attribute("data-pool")
    p.click("#confirm-run")
    p.wait_for_selector("#job-title")
    p.wait_for_selector("#log[data-done='1']", state="attached", timeout=60_000)  # the log stream ended
    assert "Hello from Horinger" in p.inner_text("#log")
    assert p.inner_text("#job-state") == "成功"
    job_id = p.url.rsplit("/", 1)[-1]
    job = demo.api.get(f"/jobs/{job_id}").json()
    assert job["state"] == "succeeded" and job["pool_id"] == chosen_pool
    p.wait_for_selector("#energy .cards", timeout=30_000)  # the node agent's samples of the job arrived
    p.click("#issue-cert")
    p.wait_for_selector("#verify-cert")
    p.click("#verify-cert")
    p.wait_for_selector("#verify-result .ok")
    shot(p, "console-job-succeeded")
    p.click("#lang")  # English switch
    p.wait_for_selector("header nav a[data-nav=run]")
    assert p.locator("header nav a[data-nav=run]").inner_text() == "One-click run"
    p.wait_for_selector("#job-state")
    assert p.inner_text("#job-state") == "succeeded"
    shot(p, "console-job-en")
    p.click("#lang")  # back to Chinese for the next tests (the choice is kept per browser)
    demo.shared["job_id"] = job_id


def test_operator_sees_the_tenants_job_and_every_page(demo: Demo, page: tuple[Any, Watch]) -> None:
    p, _w = page
    job_id = demo.shared.get("job_id") or pytest.skip("needs the tenant's job from the previous test")
    operator = demo.api.post("/admin/keys", json={"role": "operator", "name": "ops"}).json()["secret"]
    sign_in(p, demo.url, operator)
    assert "operator" in p.inner_text("header .user")
    p.goto(demo.url + "/#/jobs")
    p.wait_for_selector(f"a.job-link[href='#/jobs/{job_id}']")
    p.goto(demo.url + f"/#/jobs/{job_id}")
    p.wait_for_selector("#job-title")
    assert "hello-horinger" in p.inner_text("#job-title")
    # an operator tops up the tenant's wallet from the money page (post-paid usage is booked against it)
    tenant_id = demo.api.get(f"/jobs/{job_id}").json()["tenant_id"]
    p.goto(demo.url + "/#/money")
    p.wait_for_selector("#topup-tenant")
    p.select_option("#topup-tenant", tenant_id)
    p.fill("#topup-amount", "100.00")
    p.fill("#topup-reason", "prepayment for the demo lab")  # operator money movements are audited
    p.click("#topup")
    p.wait_for_selector("#page .ok")
    assert "¥ 100.00" in p.inner_text("#page .ok")
    audit = demo.api.get("/admin/audit").json()["items"]
    assert any(e["reason"] == "prepayment for the demo lab" for e in audit), audit
    for name in ("capacity", "money", "market", "operator"):
        p.goto(demo.url + f"/#/{name}")
        p.wait_for_selector("#page section")
        assert p.locator("#page .error").count() == 0, p.inner_text("#page")
        shot(p, f"console-{name}")


def test_invoice_prints_from_the_money_page(demo: Demo, page: tuple[Any, Watch]) -> None:
    p, _w = page
    tenant_id = next(t["id"] for t in demo.api.get("/admin/tenants").json()["items"] if t["name"] == "demo-lab")
    # a job big enough to cost at least a fen, so the month has an invoice to print
    big = demo.api.post("/jobs", json={"name": "invoice-probe", "command": "sleep 8", "tenant_id": tenant_id,
                                       "resources": {"cpus": 64}, "pool": "beijing-cpu"}).json()
    deadline = time.monotonic() + 60
    while (big := demo.api.get(f"/jobs/{big['id']}").json())["state"] != "succeeded":
        assert time.monotonic() < deadline and big["state"] not in ("failed", "cancelled"), big
        time.sleep(0.2)
    demo.api.post("/billing/run")
    usage = [u for u in demo.api.get("/billing/usage", params={"limit": 10_000}).json() if u["job_id"] == big["id"]]
    assert usage and usage[0]["booked"], usage  # the shipped world books (issue 10: stable provider ids)
    closed = demo.api.post(f"/billing/periods/{big['finished_at'][:7]}/close").json()
    assert closed["invoices"], closed
    sign_in(p, demo.url, demo.admin_key)
    p.goto(demo.url + "/#/money")
    p.wait_for_selector("a[href*='/billing/invoices/']")
    href = p.get_attribute("a[href*='/billing/invoices/']", "href")
    printable = p.context.new_page()
    printable.goto(demo.url + href)
    assert closed["invoices"][0] in printable.content()  # the printable invoice, via the session cookie
    printable.close()


def test_big_screen_totals_equal_the_api_and_update_live(demo: Demo, page: tuple[Any, Watch]) -> None:
    p, _w = page
    out = subprocess.run([yungu_exe(), "screen", "--json", "--url", demo.url, "--data-dir", str(demo.srv.data_dir)],
                         capture_output=True, text=True, timeout=30, env={**os.environ, "YUNGU_API_KEY": ""})
    assert out.returncode == 0, out.stderr
    printed = json.loads(out.stdout)  # `yungu screen`: the address and a one-time kiosk link
    assert printed["screen"] == demo.url + "/screen"
    p.set_viewport_size({"width": 1920, "height": 1080})
    p.goto(printed["kiosk_link"])
    assert p.url.endswith("/screen")
    p.wait_for_selector("#total-intelligent[data-value]")
    api = demo.api.get("/overview").json()
    for cls, v in api["capacity"]["classes"].items():
        shown = float(p.get_attribute(f"#total-{cls}", "data-value"))
        assert shown == pytest.approx(v["declared_pflops"]), cls
    assert p.locator("#region-cards .rcard").count() == len(api["regions"]) == 6
    assert p.locator("#map .node").count() == 6
    # pushed within 2 s: the live marker is on and the clock of the data moves
    p.wait_for_selector("#live.on", timeout=5000)
    deadline = time.monotonic() + 20
    while float(p.get_attribute("#power-kw", "data-value") or 0) <= 0 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert float(p.get_attribute("#power-kw", "data-value") or 0) > 0  # the screen shows power, not 0 W
    assert api["power"]["method"] in ("measured", "modelled")  # from the demo's node agent, not 0 W
    p.wait_for_selector("#arcs path, #arcs circle", timeout=60_000)  # job flows drawn
    time.sleep(1.5)
    shot(p, "screen-1080p")
    p.set_viewport_size({"width": 3840, "height": 2160})
    time.sleep(1.0)
    shot(p, "screen-4k")
    p.goto(demo.url + "/screen?lang=en")
    p.wait_for_selector("#total-intelligent[data-value]")
    assert "live operations" in p.inner_text("#screen-title")
    p.set_viewport_size({"width": 1920, "height": 1080})
    shot(p, "screen-en")
    # the ticket was single-use
    r = httpx.get(printed["kiosk_link"], follow_redirects=False)
    assert r.status_code == 401


def test_a_tenants_session_cannot_read_another_tenants_job(demo: Demo, page: tuple[Any, Watch]) -> None:
    p, w = page
    job_id = demo.shared.get("job_id") or pytest.skip("needs the tenant's job from the first test")
    other = demo.api.post("/admin/tenants", json={"name": "other-lab"}).json()
    key = demo.api.post("/admin/keys", json={"role": "tenant", "tenant_id": other["id"], "name": "other"}).json()
    sign_in(p, demo.url, key["secret"])
    status = p.evaluate("id => fetch('/api/v1/jobs/' + id).then(r => r.status)", job_id)
    assert status == 404
    w.errors.clear()  # the 404 above was asked for; the page itself must stay clean below
    p.goto(demo.url + "/#/jobs")
    p.wait_for_selector("#page section")
    assert job_id not in p.content()
    w.errors.clear()
    p.goto(demo.url + f"/#/jobs/{job_id}")
    p.wait_for_selector("#page .error")
    assert "404" in p.inner_text("#page .error")
    shot(p, "console-other-tenant-404")
    w.errors.clear()  # the browser logs the refused fetch; that is the point of this test


def test_csrf_refused_without_the_token_and_the_cookie_is_locked_down(demo: Demo, page: tuple[Any, Watch],
                                                                      chrome: Any) -> None:
    p, w = page
    sign_in(p, demo.url, demo.tenant_key)
    cookie = next(c for c in chrome.cookies() if c["name"] == "yungu_session")
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
    assert "yungu_session" not in p.evaluate("document.cookie")
    stored = p.evaluate("JSON.stringify([Object.entries(localStorage), Object.entries(sessionStorage)])")
    assert demo.tenant_key not in stored and "yg_" not in stored
    body = {"name": "csrf-probe", "command": "echo hi"}
    no_token = p.evaluate("""b => fetch('/api/v1/jobs', {method: 'POST', headers: {'Content-Type': 'application/json'},
        body: JSON.stringify(b)}).then(async r => [r.status, (await r.json()).code])""", body)
    assert no_token == [403, "csrf_refused"]
    wrong = p.evaluate("""b => fetch('/api/v1/jobs', {method: 'POST', headers: {'Content-Type': 'application/json',
        'X-CSRF-Token': 'forged'}, body: JSON.stringify(b)}).then(r => r.status)""", body)
    assert wrong == 403
    ok = p.evaluate("""async b => { const s = await (await fetch('/api/v1/session')).json();
        const r = await fetch('/api/v1/jobs', {method: 'POST', headers: {'Content-Type': 'application/json',
        'X-CSRF-Token': s.csrf_token}, body: JSON.stringify(b)}); return r.status; }""", body)
    assert ok == 201
    w.errors.clear()  # the two refusals above were asked for
    p.click("#signout")
    p.wait_for_selector("#apikey")
    assert not [c for c in chrome.cookies() if c["name"] == "yungu_session"]


def test_pages_carry_security_headers(demo: Demo) -> None:
    for path in ("/", "/screen", "/static/console.js"):
        r = httpx.get(demo.url + path)
        assert r.status_code == 200
        csp = r.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp and "script-src 'self'" in csp
        assert r.headers["x-content-type-options"] == "nosniff"
    r = httpx.post(demo.url + "/api/v1/session", json={"api_key": demo.tenant_key},
                   headers={"Origin": "http://evil.example"})
    assert r.status_code == 403  # login CSRF: sign-in only from the platform's own pages
    assert "set-cookie" not in r.headers


