"""review.html: built from results.csv, escaped, and driven in a real headless Chromium.

The browser is driven over the Chrome DevTools protocol through ``--remote-debugging-pipe``
(NUL-separated JSON on file descriptors 3 and 4), so no websocket library and no network is needed.
The browser test skips only when no Chromium binary is installed (CI installs it with
.ci/install_browser.sh).
"""

from __future__ import annotations

import base64
import fcntl
import csv
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from sarco_nn.review.gallery import REVIEW_FILE, gallery_rows, write_review_html

EVIL_ID = 'a<b>&"c\' #?%20ü'


def _write_folder(out: Path, n: int = 6, overlays: bool = True) -> Path:
    """A predict-like output folder: results.csv (new status columns) and small overlay PNGs."""
    header = ["case_id", "status", "reasons", "qc_score", "sma_cm2", "smi_cm2_m2", "muscle_hu_mean", "sarcopenic",
              "sex", "height_m", "overlay", "l3_thumbnail"]
    rows = []
    for i in range(n):
        case = EVIL_ID if i == 0 else f"case_{i:04d}"
        status = "failed" if i == 1 else "review" if i in (2, 3) else "ok"
        reasons = ("not_ct: the image is not a CT in HU; give a CT scan" if status == "failed"
                   else "qc_score_high: quality score 0.71 >= 0.50 (fov_edge)" if status == "review" else "")
        rows.append([case, status, reasons, "" if status == "failed" else f"{0.1 + 0.07 * i:.3f}",
                     "" if status == "failed" else f"{100 + 13 * ((i * 7) % n):.2f}", "", "38.5",
                     "unknown" if status == "failed" else ("yes" if i % 2 else "no"), "F", "1.65",
                     "" if status == "failed" else f"overlays/{case}.png", ""])
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "results.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([header, *rows])
    if overlays:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        (out / "overlays").mkdir(exist_ok=True)
        for row in rows:
            if row[10]:
                plt.imsave(out / row[10], np.random.default_rng(0).random((32, 32)), cmap="gray")
    return out


def test_rows_come_in_review_order_with_reasons(tmp_path):
    out = _write_folder(tmp_path / "pred")
    rows = gallery_rows(out / "results.csv")
    assert [r["status"] for r in rows][:3] == ["failed", "review", "review"]
    assert float(rows[1]["qc"]) > float(rows[2]["qc"])  # within review: most suspicious first
    assert rows[0]["reasons"] == ["not_ct: the image is not a CT in HU; give a CT scan"]


def test_page_is_self_contained_and_escapes_odd_case_ids(tmp_path):
    out = _write_folder(tmp_path / "pred")
    text = write_review_html(out).read_text(encoding="utf-8")
    assert "http://" not in text and "https://" not in text  # no CDN, nothing fetched
    assert EVIL_ID not in text and "a<b>" not in text  # never raw in the HTML
    assert "%3Cb%3E" in text  # the overlay URL of the odd id is percent-encoded
    assert 'loading = "lazy"' in text


def test_legacy_reason_column_is_read(tmp_path):
    path = tmp_path / "results.csv"
    path.write_text("case_id,status,reason,overlay\nx,failed,unreadable file,\n", encoding="utf-8")
    assert gallery_rows(path)[0]["reasons"] == ["unreadable file"]


def test_5000_rows_stay_small(tmp_path):
    out = tmp_path / "big"
    out.mkdir()
    with open(out / "results.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["case_id", "status", "reasons", "qc_score", "sma_cm2", "overlay"])
        for i in range(5000):
            w.writerow([f"patient_{i:05d}", "ok", "", "0.123", "123.45", f"overlays/patient_{i:05d}.png"])
    size = write_review_html(out).stat().st_size
    assert size < 2_000_000, size


# ---------------------------------------------------------------- real browser

def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class Cdp:
    """Minimal Chrome DevTools protocol client over --remote-debugging-pipe."""

    def __init__(self, binary: str, user_dir: Path):
        to_r, self._to_w = os.pipe()
        self._from_r, from_w = os.pipe()
        args = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
                "--disable-extensions", "--disable-background-networking", "--remote-debugging-pipe",
                f"--user-data-dir={user_dir}", "--window-size=1280,900", "about:blank"]
        # Chromium reads fd 3 and writes fd 4. Move our ends above 10 first so that the two dup2 calls
        # cannot clobber each other; every other fd is non-inheritable (PEP 446) and closes at exec.
        hi_r, hi_w = fcntl.fcntl(to_r, fcntl.F_DUPFD_CLOEXEC, 10), fcntl.fcntl(from_w, fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(to_r)
        os.close(from_w)
        to_r, from_w = hi_r, hi_w
        self.proc = subprocess.Popen(args, close_fds=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     preexec_fn=lambda: (os.dup2(hi_r, 3), os.dup2(hi_w, 4)))
        os.close(to_r)
        os.close(from_w)
        self._buf = b""
        self._id = 0
        self.events: list[dict] = []
        self.session: str | None = None

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self._buf:
            if time.time() > deadline:
                raise TimeoutError("no answer from Chromium")
            chunk = os.read(self._from_r, 1 << 16)
            if not chunk:
                raise RuntimeError("Chromium closed the pipe")
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def send(self, method: str, params: dict | None = None, timeout: float = 30, session: bool = True) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        os.write(self._to_w, json.dumps(msg).encode() + b"\0")
        deadline = time.time() + timeout
        while True:
            answer = self._read(deadline)
            if answer.get("id") == self._id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer.get("result", {})
            self.events.append(answer)

    def wait_event(self, method: str, timeout: float = 30) -> dict:
        deadline = time.time() + timeout
        for e in self.events:
            if e.get("method") == method:
                return e
        while True:
            e = self._read(deadline)
            self.events.append(e)
            if e.get("method") == method:
                return e

    def js(self, expression: str):
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in result:
            raise AssertionError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def close(self) -> None:
        try:
            self.send("Browser.close", session=False, timeout=5)
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        os.close(self._to_w)
        os.close(self._from_r)


@pytest.fixture()
def browser(tmp_path):
    binary = _chromium()
    if binary is None:
        pytest.skip("Chromium is not installed (CI installs it: .ci/install_browser.sh)")
    cdp = Cdp(binary, tmp_path / "chrome-profile")
    try:
        target = cdp.send("Target.createTarget", {"url": "about:blank"}, session=False)["targetId"]
        cdp.session = cdp.send("Target.attachToTarget", {"targetId": target, "flatten": True}, session=False)["sessionId"]
        for domain in ("Page.enable", "Runtime.enable", "Log.enable"):
            cdp.send(domain)
        yield cdp
    finally:
        cdp.close()


def _problems(cdp: Cdp) -> list[str]:
    out = []
    for e in cdp.events:
        m, p = e.get("method"), e.get("params", {})
        if m == "Runtime.exceptionThrown":
            out.append(json.dumps(p["exceptionDetails"])[:300])
        elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            out.append(json.dumps(p.get("args"))[:300])
        elif m == "Log.entryAdded" and p["entry"].get("level") == "error":
            out.append(p["entry"].get("text", "")[:300])
    return out


def _click(cdp: Cdp, selector: str) -> None:
    """A real mouse click at the element's centre (not element.click())."""
    box = cdp.js(f"(() => {{ const e = document.querySelector({json.dumps(selector)}); e.scrollIntoView();"
                 " const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()")
    for kind in ("mousePressed", "mouseReleased"):
        cdp.send("Input.dispatchMouseEvent", {"type": kind, "x": box[0], "y": box[1], "button": "left", "clickCount": 1})


def test_gallery_in_headless_chromium(browser, tmp_path):
    out = _write_folder(tmp_path / "pred", n=12)
    page = write_review_html(out)
    browser.send("Page.navigate", {"url": page.resolve().as_uri()})
    browser.wait_event("Page.loadEventFired")
    time.sleep(0.5)  # let lazy images in view load (their errors would show up below)
    assert _problems(browser) == []

    assert browser.js("document.querySelectorAll('#body tr').length") == 12
    first_ids = browser.js("[...document.querySelectorAll('#body tr')].map(r => r.dataset.id)")
    assert first_ids[0] == "case_0001"  # failed first
    assert EVIL_ID in first_ids  # the odd id survives as text
    assert browser.js("document.querySelector('#body img.thumb').loading") == "lazy"

    # clicking the SMA header sorts ascending, then descending; empty cells stay last
    sma = "[...document.querySelectorAll('#body td[data-key=sma]')].map(td => td.textContent)"
    _click(browser, '#head th[data-key="sma"]')
    values = browser.js(sma)
    numbers = [float(v) for v in values if v]
    assert numbers == sorted(numbers) and values[-1] == ""
    _click(browser, '#head th[data-key="sma"]')
    numbers = [float(v) for v in browser.js(sma) if v]
    assert numbers == sorted(numbers, reverse=True)

    # the failed case shows its reason in the table and in its detail view
    failed_row = "#body tr[data-id=case_0001]"
    assert "not_ct" in browser.js(f"document.querySelector('{failed_row} td[data-key=reasons]').textContent")
    _click(browser, failed_row)
    assert browser.js("document.getElementById('detail').classList.contains('open')")
    assert "not_ct: the image is not a CT in HU" in browser.js("document.getElementById('d-reasons').textContent")
    _click(browser, "#close")

    # the status filter narrows the table
    browser.js("{ const s = document.getElementById('fstatus'); s.value = 'review';"
               " s.dispatchEvent(new Event('input')); }")
    assert browser.js("[...document.querySelectorAll('#body tr')].map(r => r.querySelector('td[data-key=status]')"
                      ".textContent)") == ["review", "review"]
    browser.js("{ const s = document.getElementById('fstatus'); s.value = ''; s.dispatchEvent(new Event('input')); }")
    assert _problems(browser) == []

    shot = os.environ.get("SARCO_GALLERY_SCREENSHOT")
    if shot:  # docs/review_gallery.png is made this way (see the README)
        data = browser.send("Page.captureScreenshot", {"format": "png"})["data"]
        Path(shot).write_bytes(base64.b64decode(data))


def test_broken_script_would_be_caught(browser, tmp_path):
    """The console-error check can fail: a page that throws is reported."""
    page = tmp_path / "bad.html"
    page.write_text("<!DOCTYPE html><script>undefinedFunction()</script>", encoding="utf-8")
    browser.send("Page.navigate", {"url": page.as_uri()})
    browser.wait_event("Page.loadEventFired")
    assert _problems(browser)


def test_5000_scans_render_one_page_and_sort_quickly(browser, tmp_path):
    out = tmp_path / "big"
    out.mkdir()
    rng = np.random.default_rng(1)
    with open(out / "results.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["case_id", "status", "reasons", "qc_score", "sma_cm2", "overlay"])
        for i in range(5000):
            w.writerow([f"p{i:05d}", "ok", "", f"{rng.random():.3f}", f"{rng.uniform(60, 220):.2f}", ""])
    browser.send("Page.navigate", {"url": write_review_html(out).resolve().as_uri()})
    browser.wait_event("Page.loadEventFired")
    assert browser.js("document.querySelectorAll('#body tr').length") == 100  # one page in the DOM, not 5 000
    assert "5000 shown" in browser.js("document.getElementById('page').textContent")
    ms = browser.js("(() => { const t = performance.now();"
                    " document.querySelector('#head th[data-key=\"sma\"]').click(); return performance.now() - t; })()")
    assert ms < 2000, ms
    assert _problems(browser) == []
