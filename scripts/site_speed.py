"""The exported site's speed in a browser: serve ``hierloc export MODEL --web`` on a loopback
port, open it in headless Chromium, drop N photos on it and time the page: until the model is
loaded, and until every photo is answered (photos/s, WebAssembly); the JavaScript heap after.

    python scripts/site_speed.py SITE PHOTOS_FOLDER [-n 64]

Needs Chromium, chromedriver and selenium (the test extra), as the site's browser test does.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import threading
import time
from pathlib import Path


def main() -> None:
    from selenium import webdriver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("site", type=Path)
    ap.add_argument("photos", type=Path)
    ap.add_argument("-n", type=int, default=64)
    a = ap.parse_args()
    photos = sorted(
        p.resolve() for p in a.photos.iterdir() if p.suffix.lower() in (".png", ".jpg")
    )[: a.n]

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(a.site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        opts.add_argument(arg)
    browser = webdriver.Chrome(
        options=opts, service=webdriver.ChromeService("/usr/bin/chromedriver")
    )
    try:
        wait = WebDriverWait(browser, 600, poll_frequency=0.02)
        t0 = time.perf_counter()
        browser.get(f"http://127.0.0.1:{httpd.server_address[1]}/")
        wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#models input")) == 1)
        loaded = time.perf_counter() - t0
        t0 = time.perf_counter()
        browser.find_element(By.ID, "files").send_keys("\n".join(str(p) for p in photos))
        wait.until(lambda b: b.find_element(By.ID, "status").text == "done")
        answered = time.perf_counter() - t0
        cards = browser.find_elements(By.CSS_SELECTOR, "article.card")
        heap = browser.execute_script("return performance.memory.usedJSHeapSize")
    finally:
        browser.quit()
        httpd.shutdown()
    report = {
        "site_mb": round(sum(f.stat().st_size for f in a.site.rglob("*") if f.is_file()) / 1e6, 1),
        "load_s": round(loaded, 2),
        "photos": len(photos),
        "answered": len(cards),
        "seconds": round(answered, 2),
        "photos_per_s": round(len(photos) / answered, 1),
        "js_heap_mb": round(heap / 1e6, 1),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
