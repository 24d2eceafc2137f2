"""Report pictures (matplotlib, Agg backend, written atomically): the error CDF of one or more
models and the world map of mean error per country."""

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
    ax.set_xlabel("error (km)")
    ax.set_ylabel("images within error (%)")
    ax.set_ylim(0, 100)
    ax.set_xlim(1, 20_038)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title("Geolocation error CDF")
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
    ax.set_xlim(-180, 180)
    ax.set_ylim(-90, 90)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"Mean error per country ({len(g)} countries, {int(g['n'].sum()):,} images)")
    _save(plt, fig, Path(path))
