"""Report pictures (matplotlib, Agg backend, written atomically): the error CDF of one or more
models, the world map of mean error per country, the reliability diagram per level."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd

from hierloc.data.writers import write_file_atomic
from hierloc.eval.maps import world_background

THRESHOLDS_KM = (1, 25, 200, 750, 2500)


def _figure(width: float, height: float):
    import matplotlib  # ~0.5 s to import: only when a picture is drawn

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt, plt.figure(figsize=(width, height), dpi=110)


def _save(plt, fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    write_file_atomic(path, buf.getvalue())


def error_cdf_plot(errors: dict[str, np.ndarray], path: str | Path) -> None:
    """Share of images within ``x`` km (log x axis), one curve per model; the protocol's
    thresholds (1 / 25 / 200 / 750 / 2,500 km) marked."""
    plt, fig = _figure(7, 4.2)
    ax = fig.add_subplot(111)
    grid = np.logspace(0, np.log10(20_038), 400)
    for name, err in errors.items():
        err = np.sort(np.asarray(err, dtype=np.float64))
        share = np.searchsorted(err, grid, side="right") / max(1, len(err))
        ax.plot(grid, 100 * share, label=f"{name} (median {np.median(err):,.0f} km)")
    for t in THRESHOLDS_KM:
        ax.axvline(t, color="0.8", lw=0.8, zorder=0)
    ax.set_xscale("log")
    ax.set_xlabel("error (km); grey lines: the 25 / 200 / 750 / 2,500 km thresholds")
    ax.set_ylabel("images within error (%)")
    ax.set_ylim(0, 100)
    ax.set_xlim(1, 20_038)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title("Geolocation error CDF")
    _save(plt, fig, Path(path))


def reliability_plot(calibration: dict, path: str | Path, title: str = "") -> None:
    """One panel per level (:func:`hierloc.eval.metrics.level_calibration`): each confidence
    bin's share of right answers against its mean confidence, disc area ∝ answers, the
    diagonal (perfect calibration) dashed; ECE, accuracy and mean confidence in the title."""
    levels = list(calibration)
    plt, fig = _figure(3.3 * max(1, len(levels)), 3.7)
    for k, lv in enumerate(levels):
        c = calibration[lv]
        ax = fig.add_subplot(1, len(levels), k + 1)
        ax.plot([0, 1], [0, 1], color="0.6", ls="--", lw=1)
        if c["bins"]:
            _, ns, xs, ys = zip(*c["bins"], strict=True)
            ax.scatter(xs, ys, s=[15 + 300 * n / c["n"] for n in ns], color="tab:blue", zorder=3)
            ax.plot(xs, ys, color="tab:blue", lw=1, zorder=2)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_aspect("equal")
        ax.set_xlabel(f"{lv} confidence")
        if k == 0:
            ax.set_ylabel("share of top answers right")
        ax.set_title(
            f"{lv}: ECE {c['ece']:.3f}\nright {100 * c['accuracy']:.1f} %, "
            f"mean conf. {100 * c['mean_confidence']:.1f} %",
            fontsize=9,
        )
    fig.suptitle(title or "Reliability of the top answer's confidence (disc area ∝ answers)")
    fig.tight_layout()
    _save(plt, fig, Path(path))


def error_map_plot(preds: pd.DataFrame, path: str | Path) -> None:
    """Mean error per country (paper Fig. 5) on the Blue Marble: one disc per true country at
    its images' mean location, area ∝ images, colour = mean error (km)."""
    plt, fig = _figure(11, 5.8)
    ax = fig.add_subplot(111)
    ax.imshow(np.asarray(world_background(1440)), extent=(-180, 180, -90, 90), alpha=0.75)
    g = preds.groupby("true_country_id").agg(
        lat=("true_latitude", "mean"),
        lon=("true_longitude", "mean"),
        err=("error_km", "mean"),
        n=("error_km", "size"),
    )
    sc = ax.scatter(
        g["lon"],
        g["lat"],
        s=12 + 8 * np.sqrt(g["n"]),
        c=g["err"],
        cmap="RdYlGn_r",
        vmin=0,
        vmax=max(2500.0, float(g["err"].quantile(0.95))),
        edgecolors="k",
        linewidths=0.4,
    )
    fig.colorbar(sc, ax=ax, shrink=0.7, label="mean error (km)")
    sizes = [n for n in (1, 10, 100, 1000) if n <= max(1, int(g["n"].max()))]
    handles = [
        plt.scatter([], [], s=12 + 8 * np.sqrt(n), c="0.7", edgecolors="k", linewidths=0.4)
        for n in sizes
    ]
    ax.legend(
        handles, [f"{n:,} image{'s' * (n > 1)}" for n in sizes], loc="lower left", fontsize=8,
        title="disc: a true country, at its images' mean", title_fontsize=8,
    )  # fmt: skip
    ax.set_xlim(-180, 180)
    ax.set_ylim(-90, 90)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"Mean error per country ({len(g)} countries, {int(g['n'].sum()):,} images)")
    _save(plt, fig, Path(path))


def examples_plot(examples: list[dict], path: str | Path, title: str = "") -> None:
    """Example predictions explained in one picture: on the world map, each photo's true place
    (green circle), its top answer (red cross) and the line between them, numbered; below, each
    photo's thumbnail with its number, the true place, the answer, the error in km and the
    confidence; a legend.

    Each example is a dict with ``image`` (a path), ``true_lat``, ``true_lon``, ``truth``
    (names), ``pred_lat``, ``pred_lon``, ``predicted`` (names), ``error_km`` and
    ``country_confidence`` (0–1, or NaN when the model gives none)."""
    from PIL import Image

    n = len(examples)
    plt, fig = _figure(max(10.0, 2.4 * n), 8.5)
    grid = fig.add_gridspec(2, max(n, 1), height_ratios=[2.6, 1.25], hspace=0.08, wspace=0.08)
    ax = fig.add_subplot(grid[0, :])
    ax.imshow(np.asarray(world_background()), extent=(-180, 180, -90, 90))
    for k, e in enumerate(examples, 1):
        la, lo, pa, po = e["true_lat"], e["true_lon"], e["pred_lat"], e["pred_lon"]
        if abs(po - lo) <= 180:
            ax.plot([lo, po], [la, pa], color="white", lw=1.4, alpha=0.9)
        else:  # the short way crosses the antimeridian: two segments
            shift = 360 if po < lo else -360
            mid = la + (pa - la) * (180 * np.sign(lo) - lo) / (po + shift - lo)
            ax.plot([lo, 180 * np.sign(lo)], [la, mid], color="white", lw=1.4, alpha=0.9)
            ax.plot([-180 * np.sign(lo), po], [mid, pa], color="white", lw=1.4, alpha=0.9)
        ax.scatter([lo], [la], s=70, facecolor="#2ecc40", edgecolor="black", zorder=3)
        ax.scatter([po], [pa], s=80, marker="X", color="#ff4136", edgecolor="black", zorder=3)
        ax.annotate(  # offsets alternate so that numbers of nearby places stay apart
            str(k), (lo, la), xytext=(6, 2) if k % 2 else (-14, 2),
            textcoords="offset points", color="white", fontsize=10, fontweight="bold",
        )  # fmt: skip
    handles = [
        plt.Line2D([], [], marker="o", ls="", color="#2ecc40", mec="black", label="true place"),
        plt.Line2D([], [], marker="X", ls="", color="#ff4136", mec="black", label="top answer"),
        plt.Line2D([], [], color="white", label="error (true place → answer)"),
    ]
    legend = ax.legend(handles=handles, loc="lower left", fontsize=8, facecolor="#333333")
    for text in legend.get_texts():
        text.set_color("white")
    ax.set_xlim(-180, 180)
    ax.set_ylim(-90, 90)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=11)
    for k, e in enumerate(examples, 1):
        sub = fig.add_subplot(grid[1, k - 1])
        with Image.open(e["image"]) as im:
            sub.imshow(np.asarray(im.convert("RGB")), interpolation="nearest")
        sub.set_xticks([])
        sub.set_yticks([])
        conf = e.get("country_confidence", float("nan"))
        conf_text = "—" if conf != conf else f"{100 * conf:.0f} %"
        sub.set_title(str(k), fontsize=10, fontweight="bold")
        sub.set_xlabel(
            f"true: {_short(e['truth'])}\nanswer: {_short(e['predicted'])}\n"
            f"error {e['error_km']:,.0f} km\ncountry confidence {conf_text}",
            fontsize=7,
        )
    _save(plt, fig, Path(path))


def _short(names: str, width: int = 24) -> str:
    return names if len(names) <= width else names[: width - 1] + "…"
