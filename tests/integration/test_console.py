"""The web console in a real browser: Playwright (PyPI) driving Debian's Chromium.

The seed's console steps, in order: log in with the token, Create from YAML (the
Deployments and Service, then the Gateway, VirtualService and DestinationRule), YAML
edit of the VirtualService, the split moved to 80/20 with the split editor, the chart's
table growing under load. The screenshots go to the test's temporary directory; with
TCPMESH_UPDATE_DOCS_IMAGES=1 they replace the README's in docs/images/ (a test run never
changes tracked files otherwise).
"""

from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.addresses import idle_gateway_address
from tests.integration.harness import REPO, SAMPLES, MeshHarness, first_word

pytestmark = pytest.mark.integration

PORT = 31400
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DOCS_IMAGES = REPO / "docs" / "images"
SCRATCH_IMAGES = Path(tempfile.gettempdir()) / "tcpmesh-console-screenshots"
TIMEOUT_MS = 20_000

sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeshHarness]:
    address = idle_gateway_address("127.0.47.1")
    harness = MeshHarness(tmp_path_factory.mktemp("console"), address, workers=1)
    try:
        harness.up()
        yield harness
    finally:
        harness.down()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if shutil.which(CHROMIUM) is None:
        pytest.fail("Debian's chromium is not installed (scripts/system-deps/metrics.sh)")
    with sync_api.sync_playwright() as playwright, tempfile.TemporaryDirectory() as profile:
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
            # The API's certificate is signed by the mesh's own CA, which Chromium's trust
            # store does not hold; the test's HTTP clients (below) verify against that CA.
            ignore_https_errors=True,
        )
        try:
            yield context
        finally:
            context.close()


def console_url(mesh: MeshHarness) -> str:
    return mesh.tcpmesh("console", "--no-browser").stdout.strip()


def token(mesh: MeshHarness) -> str:
    doc = json.loads((mesh.state_dir / "apiserver.json").read_text())
    return str(doc["token"])


def shot(page: Any, name: str) -> None:
    update = os.environ.get("TCPMESH_UPDATE_DOCS_IMAGES") == "1"
    target = DOCS_IMAGES if update else SCRATCH_IMAGES
    target.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(target / name), full_page=False)
    assert (target / name).stat().st_size > 0


def create(page: Any, text: str) -> Any:
    page.get_by_label("YAML to create").fill(text)
    page.get_by_role("button", name="Create", exact=True).click()
    return page.locator("#create-result")


class EvilSite:
    """Another origin (another loopback address) whose page posts to the console."""

    def __init__(self, target: str) -> None:
        body = (
            "<!doctype html><script>"
            f"fetch({json.dumps(target + 'api/apply')}, {{method: 'POST', mode: 'no-cors',"
            " credentials: 'include', headers: {'Content-Type': 'text/plain'},"
            " body: JSON.stringify({namespace: 'default', yaml: 'apiVersion: v1\\nkind: Service"
            "\\nmetadata: {name: evil}\\nspec: {ports: [{port: 1}]}\\n'})})"
            ".then(() => document.title = 'sent', () => document.title = 'sent');"
            "</script>"
        ).encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.48", 0), Handler)
        self.url = f"http://127.0.0.48:{self.server.server_address[1]}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_requests_without_session_or_from_another_site_are_refused(
    mesh: MeshHarness, browser: Any
) -> None:
    url = console_url(mesh)
    assert url.endswith("/console/")
    outsider = browser.request  # shares the browser's cookies: none yet
    assert outsider.get(url + "api/session").status == 401
    assert outsider.post(url + "api/apply", data={"yaml": "x"}).status == 401
    page = browser.new_page()
    try:
        page.goto(url)
        page.get_by_label("Token").fill("wrong")
        page.get_by_role("button", name="Log in").click()
        sync_api.expect(page.get_by_role("alert").first).to_contain_text("wrong token")
        page.get_by_label("Token").fill(token(mesh))
        page.get_by_role("button", name="Log in").click()
        page.get_by_role("table", name="Deployments").wait_for(timeout=TIMEOUT_MS)
        cookie = next(c for c in browser.cookies() if c["name"] == "tcpmesh_console")
        assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
        assert cookie["secure"] is url.startswith("https:")
        # Logged in: the cookie alone does not make a write; the CSRF token is needed too,
        # and a foreign Origin is refused even with it.
        csrf = page.evaluate("() => fetch('api/session').then(r => r.json())")["csrfToken"]
        body = {"yaml": (SAMPLES / "tcp-echo-service.yaml").read_text(), "namespace": "default"}
        no_csrf = browser.request.post(url + "api/apply", data=body)
        assert no_csrf.status == 403 and "CSRF" in no_csrf.text()
        foreign = browser.request.post(
            url + "api/apply",
            data=body,
            headers={"X-CSRF-Token": csrf, "Origin": "https://evil.example"},
        )
        assert foreign.status == 403 and "cross-site" in foreign.text()
        evil = EvilSite(url)
        try:
            attack = browser.new_page()
            attack.goto(evil.url)
            attack.wait_for_function("document.title === 'sent'", timeout=TIMEOUT_MS)
            attack.close()
        finally:
            evil.close()
        assert mesh.tcpmesh("get", "service", "evil", check=False).code != 0
        assert mesh.tcpmesh("get", "service", "tcp-echo", check=False).code != 0
    finally:
        page.close()


def test_the_seeds_console_steps(mesh: MeshHarness, browser: Any) -> None:
    page = browser.new_page()
    try:
        page.goto(console_url(mesh))
        if page.get_by_label("Token").is_visible():
            page.get_by_label("Token").fill(token(mesh))
            page.get_by_role("button", name="Log in").click()
        deployments = page.get_by_role("table", name="Deployments")
        deployments.wait_for(timeout=TIMEOUT_MS)
        shot(page, "console-login.png")
        # The namespace selector: the gateway's namespace, then back.
        page.get_by_label("Namespace").select_option("istio-system")
        sync_api.expect(
            deployments.get_by_role("cell", name="istio-ingressgateway", exact=True)
        ).to_be_visible()
        page.get_by_label("Namespace").select_option("default")
        sync_api.expect(deployments).to_contain_text("No Deployments")

        # Create from YAML: the Deployments and the Service, then the routing objects.
        workloads = (SAMPLES / "tcp-echo-deployments.yaml").read_text()
        service = (SAMPLES / "tcp-echo-service.yaml").read_text()
        result = create(page, workloads + "\n---\n" + service)
        sync_api.expect(result).to_contain_text("deployment/tcp-echo-v1 created")
        sync_api.expect(
            deployments.get_by_role("cell", name="tcp-echo-v2", exact=True)
        ).to_be_visible()
        sync_api.expect(
            deployments.get_by_role("row", name=re.compile("tcp-echo-v1 1.1"))
        ).to_be_visible(timeout=60_000)

        # An invalid document: its message, with the field path, and nothing is created.
        all_v1 = (SAMPLES / "tcp-echo-all-v1.yaml").read_text()
        bad = all_v1.replace("        subset: v1\n---", "        subset: v1\n      weight: -5\n---")
        assert bad != all_v1
        result = create(page, bad)
        sync_api.expect(result).to_contain_text("spec.tcp[0].route[0].weight: weight -5 < 0")
        sync_api.expect(result).to_contain_text('VirtualService "tcp-echo" is invalid')
        shot(page, "console-invalid.png")
        assert mesh.tcpmesh("get", "gateway", "tcp-echo-gateway", check=False).code != 0

        result = create(page, all_v1)
        sync_api.expect(result).to_contain_text("virtualservice/tcp-echo created")
        for table, name in (
            ("Gateways", "tcp-echo-gateway"),
            ("VirtualServices", "tcp-echo"),
            ("DestinationRules", "tcp-echo-destination"),
        ):
            rows = page.get_by_role("table", name=table)
            sync_api.expect(rows.get_by_role("cell", name=name, exact=True)).to_be_visible()
        mesh.wait_for("all traffic on v1", lambda: _word(mesh.address) == "one", 30.0)

        edit_yaml(page, mesh)
        split_to_eighty_twenty(page, mesh)
        chart_grows_under_load(page, mesh)
    finally:
        page.close()


def _word(address: str) -> str:
    try:
        return first_word(address, PORT)
    except OSError:
        return ""


def edit_yaml(page: Any, mesh: MeshHarness) -> None:
    """YAML in place: v1 at 100 and a second destination, v2 at 0; a stale save is a
    conflict."""
    page.get_by_role("button", name="YAML of VirtualService tcp-echo").click()
    editor = page.get_by_label("Edit YAML of VirtualService tcp-echo")
    sync_api.expect(editor).to_have_value(re.compile("resourceVersion"))
    obj = yaml.safe_load(editor.input_value())
    route = obj["spec"]["tcp"][0]["route"]
    route[0]["weight"] = 100
    route.append({"destination": {"host": "tcp-echo", "subset": "v2"}, "weight": 0})
    editor.fill(yaml.safe_dump(obj, sort_keys=False))
    page.get_by_role("button", name="Save").click()
    sync_api.expect(page.locator("#editor-result")).to_contain_text("Saved")
    shot(page, "console-yaml.png")
    stored = mesh.get_json("virtualservice", "tcp-echo")
    assert [d["destination"]["subset"] for d in stored["spec"]["tcp"][0]["route"]] == ["v1", "v2"]

    # Open it again, change it behind the editor's back, then save: a conflict message.
    page.get_by_role("button", name="YAML of VirtualService tcp-echo").click()
    sync_api.expect(page.locator("#editor-result")).to_contain_text("Opened at")
    changed = dict(stored)
    changed["metadata"] = {
        "name": "tcp-echo",
        "namespace": "default",
        "labels": {"touched": "by-cli"},
    }
    changed.pop("status", None)
    mesh.tcpmesh("apply", "-f", "-", stdin=json.dumps(changed))
    editor.fill(editor.input_value().replace("weight: 0", "weight: 1"))
    page.get_by_role("button", name="Save").click()
    sync_api.expect(page.locator("#editor-result")).to_contain_text("Conflict")
    after = mesh.get_json("virtualservice", "tcp-echo")
    assert after["spec"]["tcp"][0]["route"][1]["weight"] == 0
    page.get_by_role("button", name="Close").click()


def split_to_eighty_twenty(page: Any, mesh: MeshHarness) -> None:
    v1 = page.get_by_label("Weight of tcp-echo v1")
    v2 = page.get_by_label("Weight of tcp-echo v2")
    v1.fill("80")
    v2.fill("20")
    sync_api.expect(page.get_by_label("Effective share of tcp-echo v1")).to_have_text("80.0%")
    v1.fill("60")
    sync_api.expect(page.get_by_label("Effective share of tcp-echo v2")).to_have_text("25.0%")
    v1.fill("80")
    sync_api.expect(page.get_by_label("Effective share of tcp-echo v2")).to_have_text("20.0%")
    page.get_by_role("button", name="Apply split of tcp-echo").click()
    sync_api.expect(page.locator(".split [role=alert]")).to_contain_text("Applied")
    stored = yaml.safe_load(mesh.tcpmesh("get", "vs", "tcp-echo", "-o", "yaml").stdout)
    weights = {d["destination"]["subset"]: d["weight"] for d in stored["spec"]["tcp"][0]["route"]}
    assert weights == {"v1": 80, "v2": 20}
    mesh.wait_for("v2 to answer", lambda: "two" in {_word(mesh.address) for _ in range(20)}, 15.0)
    report = json.loads(
        mesh.tcpmesh(
            "send", f"{mesh.address}:{PORT}", "-c", "500", "--expect", "v1=80,v2=20", "-o", "json"
        ).stdout
    )
    assert report["consistent"] is True and sum(report["failures"].values()) == 0


def chart_grows_under_load(page: Any, mesh: MeshHarness) -> None:
    table = page.get_by_role("table", name="New connections per destination of tcp-echo tcp[0]")
    table.wait_for(timeout=TIMEOUT_MS)

    def grown() -> dict[str, int]:
        cells = table.locator("tbody tr")
        values = {}
        for i in range(cells.count()):
            row = cells.nth(i)
            values[row.get_attribute("data-destination") or ""] = int(
                row.locator("td.grown").inner_text()
            )
        return values

    before = grown()
    stop = threading.Event()

    def load() -> None:
        deadline = time.monotonic() + 60
        n = 0
        while not stop.is_set() and n < 20_000 and time.monotonic() < deadline:
            _word(mesh.address)
            n += 1

    thread = threading.Thread(target=load)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            now = grown()
            if now["v1"] > before["v1"] + 20 and now["v2"] > before["v2"] + 5:
                break
            time.sleep(0.5)
        shot(page, "console-traffic.png")
    finally:
        stop.set()
        thread.join(10)
    assert now["v1"] > before["v1"] + 20 and now["v2"] > before["v2"] + 5, (before, now)
    chart = page.get_by_role("img", name=re.compile("Chart of new connections per second"))
    sync_api.expect(chart).to_be_visible()
    assert "weight 80" in (chart.get_attribute("aria-label") or "")


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _gateway_processes(mesh: MeshHarness) -> list[int]:
    """The gateway pod's supervisor and its workers."""
    pids: list[int] = []
    for pid_file in (mesh.state_dir / "pods").glob("istio-system/*.pid"):
        for entry in json.loads(pid_file.read_text()).values():
            pid = int(entry["pid"])
            pids.append(pid)
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            pids.extend(int(c) for c in children)
    return pids


def test_metrics_and_console_survive_fast_scraping_during_flips(mesh: MeshHarness) -> None:
    """30 s of scraping :15020 and the console's traffic view every 100 ms while the split
    flips between all-v1 and 80/20: every answer is a 200 and the gateway's memory (its
    supervisor and workers) grows by less than 8 MiB."""
    import http.cookiejar
    import ssl
    import urllib.request

    url = console_url(mesh)
    context = None
    if url.startswith("https:"):
        context = ssl.create_default_context(cafile=str(mesh.state_dir / "pki" / "ca.crt"))
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}),
        urllib.request.HTTPCookieProcessor(jar),
        urllib.request.HTTPSHandler(context=context),
    )
    login = urllib.request.Request(
        url + "api/login",
        data=json.dumps({"token": token(mesh)}).encode(),
        headers={"Content-Type": "application/json"},
    )
    assert opener.open(login, timeout=5).status == 200
    pids = _gateway_processes(mesh)
    assert len(pids) == 2, pids  # one worker
    metrics = f"http://{mesh.address}:15020/stats/prometheus"

    def scrape_metrics() -> None:
        with opener.open(metrics, timeout=5) as resp:
            assert resp.status == 200 and b"istio_tcp_connections_opened_total{" in resp.read()

    def read_console() -> None:
        with opener.open(url + "api/traffic?namespace=default", timeout=5) as resp:
            assert resp.status == 200 and json.loads(resp.read())["routes"]

    for _ in range(20):  # warm-up: allocations settle
        scrape_metrics()
        read_console()
    before = sum(_rss_kib(p) for p in pids)
    stop = threading.Event()
    done = {"metrics": 0, "console": 0, "flips": 0}
    errors: list[str] = []

    def every(name: str, action: Callable[[], None], period: float) -> None:
        deadline = time.monotonic() + 40
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                action()
                done[name] += 1
            except (OSError, AssertionError, ValueError) as exc:
                errors.append(f"{name}: {exc!r}")
            time.sleep(period)

    files = [SAMPLES / "tcp-echo-all-v1.yaml", SAMPLES / "tcp-echo-20-v2.yaml"]

    def flip() -> None:
        mesh.apply(files[done["flips"] % 2])
        _word(mesh.address)

    threads = [
        threading.Thread(target=every, args=("metrics", scrape_metrics, 0.1)),
        threading.Thread(target=every, args=("console", read_console, 0.1)),
        threading.Thread(target=every, args=("flips", flip, 1.0)),
    ]
    for thread in threads:
        thread.start()
    try:
        time.sleep(30.0)
    finally:
        stop.set()
        for thread in threads:
            thread.join(15)
    after = sum(_rss_kib(p) for p in pids)
    print(f"gateway RSS {before} KiB -> {after} KiB; {done}")
    assert errors == []
    assert done["metrics"] >= 100 and done["console"] >= 30 and done["flips"] >= 5, done
    assert after - before < 8 * 1024, (before, after)


CONSOLE_ROLLOUT = """
apiVersion: rollouts.tcpmesh.io/v1alpha1
kind: Rollout
metadata: {name: tcp-echo}
spec:
  virtualService: {name: tcp-echo, port: 31400}
  stable: {host: tcp-echo, subset: v1}
  canary: {host: tcp-echo, subset: v2}
  analysis:
    interval: 1s
    minSamples: 3
    gates:
      connectFailureRate: {max: 0.05}
  steps:
  - setWeight: 50
  - pause: {duration: 6s}
  - pause: {}
  - setWeight: 100
"""


def test_a_rollouts_steps_weight_and_gates_are_shown_live(mesh: MeshHarness, browser: Any) -> None:
    """The Rollout view follows the controller without a reload: step, weight, the
    measured gate values of the timed pause, then Healthy after a CLI promote."""
    mesh.apply(
        SAMPLES / "tcp-echo-deployments.yaml",
        SAMPLES / "tcp-echo-service.yaml",
        SAMPLES / "tcp-echo-all-v1.yaml",
        SAMPLES / "tcp-echo-20-v2.yaml",
    )
    mesh.wait_for("v2 to answer", lambda: "two" in {_word(mesh.address) for _ in range(20)}, 60.0)
    page = browser.new_page()
    stop = threading.Event()

    def load() -> None:
        deadline = time.monotonic() + 60
        for _ in range(20_000):
            if stop.is_set() or time.monotonic() > deadline:
                return
            _word(mesh.address)
            stop.wait(0.02)

    thread = threading.Thread(target=load)
    try:
        page.goto(console_url(mesh))
        if page.get_by_label("Token").is_visible():
            page.get_by_label("Token").fill(token(mesh))
            page.get_by_role("button", name="Log in").click()
        sync_api.expect(page.locator("#rollouts-status")).to_have_text(
            "No Rollouts in this namespace", timeout=TIMEOUT_MS
        )
        thread.start()
        result = create(page, CONSOLE_ROLLOUT)
        sync_api.expect(result).to_contain_text("rollout/tcp-echo created")
        view = page.get_by_role("article", name="Rollout tcp-echo")
        steps = view.get_by_role("table", name="Steps of Rollout tcp-echo")
        field = view.locator("dd[data-field=weights]")
        sync_api.expect(field).to_have_text("stable v1 50%, canary v2 50%", timeout=TIMEOUT_MS)
        sync_api.expect(steps.locator("tr[data-step='0'] td").nth(1)).to_have_text("done")
        sync_api.expect(steps.locator("tr[data-step='1'] td").nth(1)).to_have_text("current")
        # The timed pause is measured: its gate value appears as the controller writes it.
        sync_api.expect(steps.locator("tr[data-step='1'] td.gates")).to_have_text(
            re.compile(r"^Successful: connectFailureRate 0, samples [1-9][0-9]*$"),
            timeout=TIMEOUT_MS,
        )
        sync_api.expect(view.locator("dd[data-field=message]")).to_have_text(
            "step 2: paused until promoted", timeout=TIMEOUT_MS
        )
        shot(page, "console-rollout.png")
        promoted = mesh.tcpmesh("rollout", "promote", "tcp-echo").stdout
        assert promoted.strip() == "rollout.rollouts.tcpmesh.io/tcp-echo promoted"
        sync_api.expect(view.locator("dd[data-field=phase]")).to_have_text(
            "Healthy", timeout=TIMEOUT_MS
        )
        sync_api.expect(field).to_have_text("stable v1 0%, canary v2 100%")
        for i in range(4):
            sync_api.expect(steps.locator(f"tr[data-step='{i}'] td").nth(1)).to_have_text("done")
        rows = page.get_by_role("table", name="Rollouts")
        sync_api.expect(rows.get_by_role("row", name="tcp-echo Healthy 4/4 0/100")).to_be_visible()
    finally:
        stop.set()
        if thread.is_alive():
            thread.join(15)
        page.close()
        # Later tests flip the split by hand: a Healthy Rollout would hold it at 0/100.
        mesh.tcpmesh("delete", "rollout", "tcp-echo", check=False)
        mesh.apply(SAMPLES / "tcp-echo-20-v2.yaml")
