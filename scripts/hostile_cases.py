"""Damaged and mismatched artefacts of every family, made from a finished demo, each run
through the CLI as a user would: prints the command, its exit status and the one line it
prints (and whether anything was left behind). What ``tests/test_folders.py`` tests on small
models, here on the demo's real folders.

    python scripts/hostile_cases.py [--demo runs/demo] [-o runs/hostile]
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from typer.testing import CliRunner

from hierloc.cli import app

runner = CliRunner()


def _save_like(path: Path, arr: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, arr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--demo", type=Path, default=Path("runs/demo"))
    ap.add_argument("-o", "--output", type=Path, default=Path("runs/hostile"))
    a = ap.parse_args()
    demo, work = a.demo, a.output
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    models = demo / "compare"
    photo = sorted((demo / "data" / "images").rglob("*.png"))[0]

    def copy(family: str, name: str) -> Path:
        dst = work / name
        shutil.copytree(models / family / "model", dst)
        return dst

    def manifest(folder: Path, change) -> None:
        m = json.loads((folder / "manifest.json").read_text())
        (folder / "manifest.json").write_text(json.dumps(change(m)))

    cases: list[tuple[str, list[str], Path | None]] = []

    def predict(label: str, folder: Path) -> None:
        cases.append((label, ["predict", str(folder), str(photo)], None))

    f = copy("geosurge", "gs-no-inputs")
    manifest(f, lambda m: {k: v for k, v in m.items() if k != "inputs"})
    predict("GeoSURGE manifest without inputs", f)
    f = copy("geosurge", "gs-cells")
    manifest(f, lambda m: m | {"cells": [c + 1 for c in m["cells"]]})
    predict("GeoSURGE cell counts that do not fit the weights", f)
    f = copy("geosurge", "gs-depth")
    cfg = yaml.safe_load((f / "config.yaml").read_text())
    cfg["model"]["depth"] = int(cfg["model"]["depth"]) + 1
    (f / "config.yaml").write_text(yaml.safe_dump(cfg))
    predict("GeoSURGE config.yaml depth that does not fit", f)
    f = copy("knn", "knn-no-gallery")
    (f / "gallery.npy").unlink()
    predict("knn without gallery.npy", f)
    f = copy("knn", "knn-short")
    city = np.load(f / "gallery_city.npy")
    _save_like(f / "gallery_city.npy", city[:-3])
    predict("knn gallery_city.npy shorter than the gallery", f)
    f = copy("classify", "classify-cities")
    manifest(f, lambda m: m | {"cities": m["cities"] + 1})
    predict("classify: manifest city count that does not fit the weights", f)
    f = copy("regress", "regress-no-config")
    manifest(f, lambda m: {k: v for k, v in m.items() if k != "config"})
    predict("regress without its config", f)
    f = copy("zeroshot", "zeroshot-dim")
    mean = np.load(f / "city_mean.npy")
    _save_like(f / "city_mean.npy", np.zeros((len(mean), mean.shape[1] + 4), mean.dtype))
    predict("zeroshot city_mean.npy of another dimension", f)

    # training inputs
    head = work / "head.parquet"
    pd.read_parquet(demo / "data" / "metadata.parquet").head(40).to_parquet(head)
    for p in ("images", "semantic"):
        link = work / p
        if (demo / "data" / p).exists() and not link.exists():
            link.symlink_to((demo / "data" / p).resolve())
    sem30 = work / "sem30"
    res = runner.invoke(app, ["semantic", str(head), "-o", str(sem30), "--size", "30"])
    assert res.exit_code == 0, res.output
    no_assign = work / "cells-no-assignments"
    shutil.copytree(demo / "cells", no_assign)
    (no_assign / "assignments.parquet").unlink()
    (work / "bad.csv").write_text("id,latitude,longitude\na,100,5\nb,x,3\n")
    tok, sem, cells = str(demo / "tokens"), str(demo / "semantic"), str(demo / "cells")
    h, feats = str(demo / "hierarchy"), str(demo / "features")
    gs = ["train", "--model", "geosurge", "--features", tok]
    cmp = ["compare", "--hierarchy", h, "--features", feats, "--data", str(demo / "data")]
    ab = ["ablate", "--hierarchy", h, "--features", feats, "--data", str(demo / "data")]
    out = work / "out"
    training = [
        ("GeoSURGE maps that do not fit the token grid",
         [*gs, "--semantic", str(sem30), "--cells", cells, "-o", str(out)]),
        ("GeoSURGE model.depth beyond the cells' partitions",
         [*gs, "--semantic", sem, "--cells", cells, "--set", "model.depth=9", "-o", str(out)]),
        ("a cells folder without assignments.parquet",
         [*gs, "--semantic", sem, "--cells", str(no_assign), "-o", str(out)]),
        ("cells build where every row is rejected",
         ["cells", "build", str(work / "bad.csv"), "-o", str(out)]),
        ("cells build with --tau-min above every cell's count",
         ["cells", "build", str(demo / "data" / "train.parquet"), "--tau-min", "100000",
          "-o", str(out)]),
        ("train --model knn --config nope.yaml",
         ["train", "--model", "knn", "--hierarchy", h, "--features", feats,
          "--config", str(work / "nope.yaml"), "-o", str(out)]),
        ("compare with GeoSURGE and no --semantic",
         [*cmp, "--models", "geosurge", "--cells", cells, "--tokens", tok, "-o", str(out)]),
        ("compare with an unknown --geosurge-set key",
         [*cmp, "--models", "geosurge", "--cells", cells, "--tokens", tok, "--semantic", sem,
          "--geosurge-set", "optim.nope=1", "-o", str(out)]),
        ("ablate --tables ,", [*ab, "--tables", ",", "-o", str(out)]),
    ]  # fmt: skip
    cases += [(label, args, out) for label, args in training]

    for label, args, left in cases:
        res = runner.invoke(app, args)
        lines = [ln for ln in res.output.splitlines() if ln.strip() and "INFO" not in ln]
        shown = " ".join(str(x).replace(str(work) + "/", "").replace(str(demo) + "/", "DEMO/")
                         for x in args)  # fmt: skip
        print(f"- {label}: `hierloc {shown}` → exit {res.exit_code}")
        for ln in lines:
            print(f"  `{ln.strip()}`")
        for path in [] if left is None else [left, left.with_name(left.name + ".run")]:
            if path.exists():  # the output, or a training's run folder beside it
                print(f"  LEFT BEHIND: {path}")
                shutil.rmtree(path)


if __name__ == "__main__":
    main()
