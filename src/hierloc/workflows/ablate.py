"""``hierloc ablate``: the paper's ablation rows on one data set, from one base config.

Tables (paper numbering): 6 — manifold; 7 — zero shot (the ``zeroshot`` baseline), InfoNCE,
no attention, unsquared distance, no text and location; 8 — flat per-level search, beam 1,
beam 10 (one trained model, three searches); 10 — mean image embeddings removed level by level,
coarse → fine; 11 — curvature K; 12 — τ; 13 — λ; 14 — kernel.
GeoSURGE's (given its inputs): VI — learned cell embeddings vs a plain classification head;
VII — hierarchy depth 1, 3, 5, 7 (the coarsest partitions first); VIII — fusion blocks 0–3.
Each distinct training config is trained once (the base config serves every table) under
``OUT/runs/<variant>`` with ``hierloc compare``'s stages, so an interrupted ablation resumes
and a rerun only re-reads results. Output: ``ablation.md`` (the tables in the paper's layout,
with the paper's best row and whether it is ours too), ``ablation.json``.

Seeds: the base configs (``base``, ``gs-base``) are trained once per seed (``seeds``; every
variant with ``all_seeds``) — seed 0 under ``runs/<variant>``, seed ``s`` under
``runs/<variant>-seed<s>`` with ``run.seed=s`` — and a row reports the mean over its seeds
with the GeoScore's standard deviation. A table's *seed spread* is the largest standard
deviation among its rows (a single-seed row is assumed to vary as much as the base config);
an ordering is called only when the GeoScore gap exceeds it.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hierloc.data.writers import write_file_atomic
from hierloc.errors import InputError
from hierloc.train.families import family_of
from hierloc.workflows.compare import build_model, check_models, evaluate_model


@dataclass(frozen=True)
class Row:
    table: int | str  # HierLoc's tables are numbers, GeoSURGE's roman numerals
    label: str
    variant: str  # training variant name ("base" = the base config)
    overrides: tuple[str, ...] = ()
    search: str = "beam"
    beam: int = 10
    paper_best: bool = False  # the paper's best row of its table
    model: str = "hierloc"  # the family trained (hierloc.train.families)


def rows() -> list[Row]:
    v = Row
    return [
        v(6, "HierLoc (Euclidean)", "euclidean", ("model.manifold=euclidean",)),
        v(6, "HierLoc (Spherical)", "sphere", ("model.manifold=sphere",)),
        v(6, "HierLoc (Hyperbolic)", "base", paper_best=True),
        v(7, "zero shot (nearest mean image embedding)", "zeroshot", model="zeroshot"),
        v(7, "HierLoc w/ InfoNCE", "infonce", ("loss.loss=infonce",)),
        v(7, "HierLoc w/o attention", "noattn", ("model.attention=false",)),
        v(7, "HierLoc w/o squared distance", "unsquared", ("loss.squared_distance=false",)),
        v(7, "HierLoc w/o text and location", "imageonly", ("model.modalities=[image]",)),
        v(7, "HierLoc", "base", paper_best=True),
        v(8, "Flat per-level (no hierarchy)", "base", search="flat"),
        v(8, "Hierarchical (beam=1)", "base", beam=1),
        v(8, "Hierarchical (beam=10)", "base", paper_best=True),
        # Table 10: mean image embeddings removed coarse → fine, cumulatively (paper's order)
        *[
            v(
                10,
                label,
                "base" if not drop else f"nomean{''.join(map(str, drop))}",
                () if not drop else (f"model.drop_image_mean_levels=[{','.join(map(str, drop))}]",),
                paper_best=not drop,
            )
            for label, drop in (
                ("None removed", ()),
                ("Country", (0,)),
                ("Country & Region", (0, 1)),
                ("Country & Region & Sub-region", (0, 1, 2)),
                ("Country & Region & Sub-region & City", (0, 1, 2, 3)),
            )
        ],
        *[
            v(
                11,
                f"K = {k}",
                "base" if k == 0.8 else f"K{k}",
                () if k == 0.8 else (f"model.K={k}",),
                paper_best=k == 0.8,
            )
            for k in (0.25, 0.5, 0.75, 0.8, 1.0)
        ],
        *[
            v(
                12,
                f"τ = {t}",
                "base" if t == 0.1 else f"tau{t}",
                () if t == 0.1 else (f"loss.tau_init={t}",),
                paper_best=t == 0.1,
            )
            for t in (0.07, 0.1, 0.15, 0.3)
        ],
        *[
            v(
                13,
                f"λ = {lam}",
                "base" if lam == 1.0 else f"lam{lam}",
                () if lam == 1.0 else (f"loss.lam={lam}",),
                paper_best=lam == 1.0,
            )
            for lam in (0.0, 0.5, 1.0, 2.0)
        ],
        *[
            v(
                14,
                k.capitalize(),
                "base" if k == "laplace" else k,
                () if k == "laplace" else (f"loss.kernel={k}",),
                paper_best=k == "laplace",
            )
            for k in ("gauss", "inverse", "laplace")
        ],
        v(
            "VI",
            "Classification head (no geographic embeddings)",
            "gs-classify",
            ("model.head=classify",),
            model="geosurge",
        ),
        v("VI", "GeoSURGE (learned cell embeddings)", "gs-base", paper_best=True, model="geosurge"),
        *[
            v(
                "VII",
                f"depth {d}",
                "gs-base" if d == 7 else f"gs-depth{d}",
                () if d == 7 else (f"model.depth={d}",),
                paper_best=d == 7,
                model="geosurge",
            )
            for d in (1, 3, 5, 7)
        ],
        *[
            v(
                "VIII",
                "no fusion" if b == 0 else f"{b} fusion block{'s' * (b > 1)}",
                "gs-base" if b == 3 else f"gs-blocks{b}",
                () if b == 3 else (f"model.blocks={b}",),
                paper_best=b == 3,
                model="geosurge",
            )
            for b in (0, 1, 2, 3)
        ],
    ]


GEOSURGE_TABLES = ("VI", "VII", "VIII")


def parse_tables(spec: str | None) -> list[int | str] | None:
    """``"6,VII"`` → ``[6, "VII"]``; ``None`` → all."""
    if not spec:
        return None
    out: list[int | str] = []
    for t in (x.strip() for x in spec.split(",") if x.strip()):
        out.append(int(t) if t.isdigit() else t.upper())
    if not out:
        raise InputError(
            f"--tables {spec!r}: names no table; give e.g. 6,8 or VII (leave it out for all)"
        )
    known = {r.table for r in rows()}
    bad = [t for t in out if t not in known]
    if bad:
        raise InputError(
            f"--tables: unknown {bad}; choose from 6, 7, 8, 10, 11, 12, 13, 14 "
            "(HierLoc) and VI, VII, VIII (GeoSURGE)"
        )
    return out


def parse_seeds(spec: str) -> list[int]:
    """``"0,1,2"`` → ``[0, 1, 2]``: distinct non-negative integers, at least one."""
    parts = [x.strip() for x in spec.split(",") if x.strip()]
    if not parts or not all(x.isdigit() for x in parts):
        raise InputError(
            f"--seeds: {spec!r} is not a comma-separated list of non-negative integers; "
            "write e.g. --seeds 0,1,2"
        )
    seeds = [int(x) for x in parts]
    if len(set(seeds)) != len(seeds):
        raise InputError(f"--seeds: {spec!r} repeats a seed; list each seed once")
    return seeds


SEEDED = ("base", "gs-base")  # the variants trained once per seed without all_seeds


def _runs_of(row: Row, seeds: list[int], all_seeds: bool) -> list[tuple[int, str]]:
    """``[(seed, folder name)]`` of one row's variant: seed 0 keeps the plain name (so
    ablations made before seeds existed are reused); a fitted family (the zero-shot baseline)
    is fitted once."""
    variant = row.variant
    if family_of(row.model).trains == "fit":
        return [(seeds[0], variant)]
    chosen = seeds if all_seeds or variant in SEEDED else seeds[:1]
    return [(s, variant if s == 0 else f"{variant}-seed{s}") for s in chosen]


def _mean_over_seeds(metrics: list[dict]) -> dict:
    """Every numeric score averaged over the seeds (``None`` stays ``None``), with the
    GeoScore's standard deviation and per-seed values."""
    out: dict = {}
    for k in metrics[0]:
        vals = [m[k] for m in metrics]
        numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in vals)
        out[k] = statistics.fmean(vals) if numeric else vals[0]
    gs = [m["geoscore"] for m in metrics]
    out["n_seeds"] = len(gs)
    out["seed_geoscores"] = gs
    out["geoscore_std"] = statistics.stdev(gs) if len(gs) > 1 else None
    return out


def ablate(
    hierarchy: Path,
    features: Path,
    data: Path,
    output: Path,
    val: Path | None = None,
    split: str | None = None,
    config: Path | None = None,
    base: list[str] | None = None,
    tables: list[int | str] | None = None,
    say: Callable[[str], None] = print,
    geosurge: dict | None = None,
    geosurge_base: list[str] | None = None,
    seeds: list[int] | None = None,
    all_seeds: bool = False,
) -> dict:
    """Train every variant the selected tables need (reusing finished ones), evaluate every
    row, write ``ablation.md`` and ``ablation.json``; returns ``{table: [row results]}``.
    ``geosurge``: GeoSURGE's ``{"cells", "tokens", "semantic"}`` (its tables are left out
    when not given and ``tables`` does not ask for them); ``geosurge_base``: its overrides.
    ``seeds``: the seeds of the base configs (of every variant with ``all_seeds``)."""
    seeds = list(seeds or [0])
    for name, over in (("--set", base), ("--geosurge-set", geosurge_base)):
        if len(seeds) > 1 and any(o.split("=")[0].strip() == "run.seed" for o in over or []):
            raise InputError(f"{name} run.seed=… and --seeds both set the seed; use --seeds")
    have_gs = bool(geosurge and geosurge.get("cells"))
    selected = [
        r
        for r in rows()
        if (r.table in tables if tables is not None else have_gs or r.table not in GEOSURGE_TABLES)
    ]
    base = list(base or [])
    output = Path(output)
    plan = []  # (variant, run name, model name, folder, its overrides), checked before work
    for r in selected:
        if any(v == r.variant for v, *_ in plan):
            continue
        family = family_of(r.model)
        for seed, run in _runs_of(r, seeds, all_seeds):
            seeded = [f"run.seed={seed}"] if run != r.variant else []
            if family.trains == "fit":  # a baseline row: the family itself, its defaults
                name, over = r.model, []
            else:  # a variant name of the family ("hierloc-noattn", "geosurge-depth3"; the
                # GeoSURGE variants' folders carry gs- so that they never meet HierLoc's)
                name = f"{r.model}-{r.variant.removeprefix('gs-')}"
                start = geosurge_base if r.model == "geosurge" else base
                over = list(start or []) + list(r.overrides) + seeded
            plan.append((r.variant, run, name, output / "runs" / run, over))
    for _, run, name, _, over in plan:
        try:
            check_models([name], config, {name: over}, geosurge, hierarchy)
        except InputError as e:
            raise InputError(f"variant {run}: {e}") from None
    models: dict[str, list[tuple[str, Path]]] = {}  # variant → [(run name, model folder)]
    for variant, run, name, folder, over in plan:
        say(f"variant {run}: training (or reusing)")
        family = family_of(name).name
        if family == "geosurge":
            m = build_model(name, folder, hierarchy, features, val, None, over, geosurge=geosurge)
        else:
            cfg = config if family == "hierloc" else None
            m = build_model(name, folder, hierarchy, features, val, cfg, over)
        models.setdefault(variant, []).append((run, m))
    results: dict[int, list[dict]] = {}
    for r in selected:
        say(f"table {r.table}: {r.label}")
        feats = None if r.model == "geosurge" else features  # it reads its own stores
        per_seed = []
        for run, model_dir in models[r.variant]:
            tag = f"{run}-{r.search}{r.beam if r.search == 'beam' else ''}"
            m = evaluate_model(
                model_dir, data, output / "evals" / tag, split, feats, search=r.search, beam=r.beam
            )
            per_seed.append(m["entity"])
        results.setdefault(r.table, []).append(
            {
                "label": r.label,
                "paper_best": r.paper_best,
                "variant": r.variant,
                **_mean_over_seeds(per_seed),
            }
        )
    write_file_atomic(output / "ablation.json", json.dumps(results, indent=2) + "\n")
    write_file_atomic(output / "ablation.md", render(results, base, geosurge_base, seeds))
    return results


def seed_spread(rs: list[dict]) -> float | None:
    """A table's seed spread: the largest GeoScore standard deviation of its rows (``None``
    when every row has one seed)."""
    spreads = [r["geoscore_std"] for r in rs if r.get("geoscore_std") is not None]
    return max(spreads) if spreads else None


def verdict(rs: list[dict]) -> str:
    """Whether the paper's best row of a table is ours too, called only beyond the seed
    spread (the largest GeoScore standard deviation of the table's rows)."""
    ours = max(rs, key=lambda r: r["geoscore"])
    paper = next((r for r in rs if r["paper_best"]), None)
    if paper is None:
        return ""
    spread = seed_spread(rs)
    head = f"\nPaper's best: {paper['label']}; ours by GeoScore: {ours['label']}"
    if spread is None:
        return (
            f"{head} — one seed, so a direction, not an ordering (rerun with --seeds 0,1,2 to "
            "call it).\n"
        )
    if ours["label"] == paper["label"]:
        others = [r for r in rs if r["label"] != ours["label"]]
        if not others:
            return f"{head}.\n"
        runner = max(others, key=lambda r: r["geoscore"])
        gap, ahead_of, called = ours["geoscore"] - runner["geoscore"], runner["label"], "holds"
    else:
        gap, ahead_of = ours["geoscore"] - paper["geoscore"], "the paper's best"
        called = "does not hold"
    if gap > spread:
        return (
            f"{head} — the paper's ordering {called}: {gap:.0f} ahead of {ahead_of}, beyond the "
            f"seed spread ({spread:.0f}).\n"
        )
    return (
        f"{head} — {gap:.0f} ahead of {ahead_of}, within the seed spread ({spread:.0f}): "
        "not called.\n"
    )


def call(row: dict, paper: dict, spread: float | None) -> str:
    """One row's ordering against the paper's best row of its table: ``held`` when the
    paper's best is ahead by more than the seed spread, ``not held`` when the row is,
    ``unresolved`` inside it, and the bare difference with one seed (no spread to call by)."""
    gap = row["geoscore"] - paper["geoscore"]
    text = f"{gap:+.0f}"
    if spread is None:
        return f"{text} (one seed)"
    if gap < -spread:
        return f"{text}: held"
    if gap > spread:
        return f"{text}: not held"
    return f"{text}: unresolved"


def render(
    results: dict,
    base: list[str],
    geosurge_base: list[str] | None = None,
    seeds: list[int] | None = None,
) -> str:
    """The tables in the paper's layout (GeoScore, mean km, accuracy per level), each with
    the paper's best row and ours (by GeoScore) and whether that is beyond the seed spread."""
    seeds = list(seeds or [0])
    out = [
        "# hierloc ablate\n",
        f"\nBase config overrides: `{' '.join(base) or '(defaults)'}`"
        + (
            f"; GeoSURGE's: `{' '.join(geosurge_base) or '(defaults)'}`"
            if any(str(t) in GEOSURGE_TABLES for t in results)
            else ""
        )
        + ". Entity protocol; accuracies and recall at km in %.\n",
    ]
    if len(seeds) > 1:
        out.append(
            f"\nSeeds {', '.join(map(str, seeds))}: rows with several seeds give the mean and, "
            "for GeoScore, ± the standard deviation; a table's seed spread is its largest "
            "standard deviation, and an ordering is called only beyond it.\n"
        )
    keys = ("country", "region", "subregion", "city", "25km", "200km", "750km", "2500km")
    for table, rs in results.items():
        name = f"{table} (GeoSURGE)" if str(table) in GEOSURGE_TABLES else str(table)
        out.append(
            f"\n## Table {name}\n\n| row | GeoScore | against the paper's best | mean km | "
            "median km | country | region | subregion | city | 25 km | 200 km | 750 km | "
            "2500 km |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
        )
        paper = next((r for r in rs if r["paper_best"]), None)
        spread = seed_spread(rs)
        for r in rs:
            accs = " | ".join(
                "—" if r.get(f"acc_{k}") is None else f"{100 * r[f'acc_{k}']:.1f}" for k in keys
            )
            mark = " (paper's best)" if r["paper_best"] else ""
            score = f"{r['geoscore']:.0f}"
            if r.get("geoscore_std") is not None:
                score += f" ± {r['geoscore_std']:.0f} ({r['n_seeds']} seeds)"
            against = "—" if paper is None or r is paper else call(r, paper, spread)
            out.append(
                f"| {r['label']}{mark} | {score} | {against} | {r['mean_km']:,.0f} | "
                f"{r['median_km']:,.0f} | {accs} |\n"
            )
        out.append(verdict(rs))
    return "".join(out)
