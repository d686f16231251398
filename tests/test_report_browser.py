"""The HTML report is what people open, so it is opened in a real headless browser (Debian's chromium, driven over the
Chrome DevTools Protocol with `websocket-client`): every figure must decode and render (naturalWidth > 0) and the page
must log no console errors, exceptions or failed loads. A deliberately broken page proves the check can fail.

Chromium comes from `tools/install_chromium.sh` (run by `make test`, and here when it is missing); the test skips only
when it cannot be installed, saying why. Results are made by hand (no training), so the test takes seconds.
"""
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from astlab.lab.analysis import write_report

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from test_plots import fake_result  # noqa: E402

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--remote-debugging-port=0"]


def chromium_path():
    exe = shutil.which("chromium")
    if exe: return exe
    r = subprocess.run(["bash", str(ROOT/"tools/install_chromium.sh")], capture_output=True, text=True, timeout=900)
    exe = shutil.which("chromium")
    if not exe: pytest.skip(f"chromium cannot be installed here: {(r.stdout + r.stderr).strip().splitlines()[-1:]}")
    return exe


class Browser:
    "A headless chromium with an empty profile, one page, and a tiny CDP client over websocket-client."
    def __init__(self, exe, profile):
        self.proc = subprocess.Popen([exe, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file, t0 = Path(profile)/"DevToolsActivePort", time.time()
        while not (port_file.is_file() and port_file.read_text().strip()):
            assert self.proc.poll() is None and time.time() - t0 < 60, "chromium did not start its DevTools endpoint"
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        for _ in range(100):
            pages = [t for t in json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list")) if t["type"] == "page"]
            if pages: break
            time.sleep(0.1)
        import websocket
        self.ws = websocket.create_connection(pages[0]["webSocketDebuggerUrl"], timeout=60, suppress_origin=True)
        self.id, self.events = 0, []
        for m in ("Runtime.enable", "Log.enable", "Page.enable", "Network.enable"): self.call(m)

    def call(self, method, **params):
        self.id += 1; my = self.id
        self.ws.send(json.dumps(dict(id=my, method=method, params=params)))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == my:
                assert "error" not in msg, msg
                return msg.get("result", {})
            self.events.append(msg)

    def wait_for(self, event, timeout=60):
        t0 = time.time()
        while time.time() - t0 < timeout:
            if any(e.get("method") == event for e in self.events): return
            self.events.append(json.loads(self.ws.recv()))
        raise TimeoutError(event)

    def open(self, path):
        "Load `path`; return (images: [(alt, naturalWidth, naturalHeight, decoded or error)], console errors)."
        self.events.clear()
        self.call("Page.navigate", url=Path(path).resolve().as_uri())
        self.wait_for("Page.loadEventFired")
        js = """Promise.all([...document.images].map(i => i.decode().then(() => [i.alt, i.naturalWidth, i.naturalHeight, 'ok'],
                                                                           e => [i.alt, i.naturalWidth, i.naturalHeight, String(e)])))"""
        imgs = self.call("Runtime.evaluate", expression=js, awaitPromise=True, returnByValue=True)["result"]["value"]
        self.call("Runtime.evaluate", expression="1")            # flush events queued while evaluating
        errors = []
        for e in self.events:
            m, p = e.get("method"), e.get("params", {})
            if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                errors.append("console: " + " ".join(str(a.get("value", a.get("description"))) for a in p.get("args", [])))
            elif m == "Runtime.exceptionThrown": errors.append("exception: " + p["exceptionDetails"].get("text", ""))
            elif m == "Log.entryAdded" and p["entry"]["level"] == "error": errors.append("log: " + p["entry"]["text"])
            elif m == "Network.loadingFailed": errors.append("load failed: " + p.get("errorText", ""))
        return imgs, errors

    def close(self):
        try: self.ws.close()
        finally:
            self.proc.terminate()
            try: self.proc.wait(10)
            except subprocess.TimeoutExpired: self.proc.kill()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    pytest.importorskip("websocket", reason="pip install websocket-client (in the dev extra)")
    b = Browser(chromium_path(), tmp_path_factory.mktemp("chromium-profile"))
    yield b
    b.close()


def test_report_renders_in_a_real_browser(tmp_path, browser):
    for m in ("ast", "random", "full"): (tmp_path/f"final_results_{m}.json").write_text(json.dumps(fake_result(m)))
    page = write_report(tmp_path)
    imgs, errors = browser.open(page)
    assert errors == []
    assert len(imgs) == 1 + 2, imgs                           # the Pareto chart + traces of ast and random (full has none)
    for alt, w, h, status in imgs:
        assert status == "ok" and w > 100 and h > 100, (alt, w, h, status)
    assert "no controller to trace" in page.read_text()


def test_the_browser_check_catches_a_broken_page(tmp_path, browser):
    "A truncated PNG and a console error: the same check must report both (so the test above can fail)."
    (tmp_path/"final_results_ast.json").write_text(json.dumps(fake_result("ast")))
    text = write_report(tmp_path).read_text()
    i = text.index("data:image/png;base64,") + len("data:image/png;base64,")
    bad = tmp_path/"broken.html"          # the first image keeps only its PNG signature; a script logs an error
    bad.write_text(text[:i] + "iVBORw0KGgoAAAANSUhEUg" + text[text.index('"', i):]
                   .replace("</body>", "<script>console.error('boom')</script></body>"))
    imgs, errors = browser.open(bad)
    assert any(status != "ok" or w == 0 for _, w, _, status in imgs), imgs
    assert any("boom" in e for e in errors), errors

