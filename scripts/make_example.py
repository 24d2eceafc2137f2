"""Regenerate examples/predictions.csv and examples/truth.csv (used by `make demo`).

.venv/bin/python scripts/make_example.py
"""

from pathlib import Path

from hierloc.bench.synthetic import make_pairs

out = Path(__file__).resolve().parents[1] / "examples"
pred, truth = make_pairs(500, seed=2026)
pred.round(6).to_csv(out / "predictions.csv", index=False)
truth.round(6).to_csv(out / "truth.csv", index=False)
print(f"wrote {len(pred)} rows to {out}")
