"""``hierloc score`` through the CLI: OSV5M parity from files, output formats, and one test
per kind of bad input (one-line error naming file, row and column; no traceback)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from hierloc.cli import app
from hierloc.eval.score import JSON_KEYS
from tests.test_metrics import assert_matches_official, parity_frames

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def write(df: pd.DataFrame, path):
    if str(path).endswith(".parquet"):
        df.to_parquet(path, index=False)
    else:
        df.to_csv(path, index=False)
    return path


@pytest.fixture
def pair(tmp_path):
    """A small valid (predictions, truth) pair of CSVs."""
    pred = pd.DataFrame(
        {"id": ["a", "b", "c"], "latitude": [48.85, 40.0, -33.9], "longitude": [2.35, -3.7, 151.2]}
    )
    truth = pd.DataFrame(
        {
            "id": ["c", "a", "b"],
            "latitude": [-33.87, 48.86, 41.4],
            "longitude": [151.21, 2.35, 2.17],
        }
    )
    return write(pred, tmp_path / "pred.csv"), write(truth, tmp_path / "truth.csv")


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_cli_reproduces_official_osv5m_metrics(osv5m_parity, tmp_path, suffix):
    pred, truth = parity_frames(osv5m_parity)
    p = write(pred, tmp_path / f"pred{suffix}")
    t = write(truth, tmp_path / f"truth{suffix}")
    out = tmp_path / "metrics.json"
    res = run("score", p, "--truth", t, "--format", "json", "--output", out)
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout)
    assert list(result)[: len(JSON_KEYS)] == list(JSON_KEYS)
    assert result["protocol"] == "osv5m"  # auto picks osv5m from the unique_* columns
    assert_matches_official(result, osv5m_parity["expected"])
    assert json.loads(out.read_text()) == result


def test_table_format_and_distance_protocol(pair):
    p, t = pair
    res = run("score", p, "--truth", t)
    assert res.exit_code == 0, res.output
    assert "GeoScore" in res.stdout and "protocol distance" in res.stdout
    res = run("score", p, "--truth", t, "-f", "json")
    m = json.loads(res.stdout)
    assert m["n"] == 3 and m["acc_country"] is None and m["protocol"] == "distance"


def test_entity_protocol_from_files(tmp_path):
    pred = pd.DataFrame(
        {
            "id": [1, 2, 3, 4],
            "latitude": [0.0] * 4,
            "longitude": [0.0] * 4,
            "country_id": ["FR", "FR", "DE", "IT"],
        }
    )
    truth = pd.DataFrame(
        {
            "id": [1, 2, 3, 4],
            "latitude": [0.0] * 4,
            "longitude": [0.0] * 4,
            "country_id": ["FR", "DE", "DE", "nan"],
        }
    )
    res = run(
        "score",
        write(pred, tmp_path / "p.csv"),
        "-t",
        write(truth, tmp_path / "t.csv"),
        "-f",
        "json",
    )
    m = json.loads(res.stdout)
    assert m["protocol"] == "entity"
    assert m["acc_country"] == pytest.approx(2 / 3) and m["acc_city"] is None
    assert m["acc_1km"] == 1.0


def test_help_explains_every_option():
    res = run("score", "--help")
    assert res.exit_code == 0
    text = " ".join(res.stdout.split())
    for opt in [
        "--truth",
        "--protocol",
        "--clean",
        "--allow-missing",
        "--format",
        "--output",
        "--verbose",
    ]:
        assert opt in text
    for word in ["osv5m", "entity", "distance", "GeoScore", "'nan'"]:
        assert word in text


def _assert_one_line_error(res, *fragments):
    assert res.exit_code == 2, res.output
    err = res.stderr.strip()
    assert err.startswith("hierloc: error:"), err
    assert "\n" not in err and "Traceback" not in res.output
    for f in fragments:
        assert f in err, f"{f!r} not in {err!r}"


def test_missing_file(tmp_path, pair):
    _, t = pair
    _assert_one_line_error(
        run("score", tmp_path / "nope.csv", "-t", t), "nope.csv", "does not exist"
    )


def test_unknown_format(tmp_path, pair):
    _, t = pair
    bad = tmp_path / "pred.txt"
    bad.write_text("id,latitude,longitude\n1,0,0\n")
    _assert_one_line_error(
        run("score", bad, "-t", t), "pred.txt", "unknown file format", ".parquet"
    )


def test_missing_column_suggests_close_name(tmp_path, pair):
    _, t = pair
    bad = tmp_path / "pred.csv"
    bad.write_text("id,lat,longitude\n1,0,0\n")
    _assert_one_line_error(run("score", bad, "-t", t), "pred.csv", "missing column 'latitude'")


@pytest.mark.parametrize(
    "rows,fragments",
    [
        ("a,1.0,2.0\nb,abc,3.0\n", ["row 2 (line 3)", "'latitude'", "'abc' is not a number"]),
        ("a,1.0,2.0\nb,,3.0\n", ["row 2 (line 3)", "'latitude'", "is empty"]),
        ("a,1.0,2.0\nb,NaN,3.0\n", ["row 2 (line 3)", "'latitude'", "not finite"]),
        ("a,95.0,2.0\nb,1.0,3.0\n", ["row 1 (line 2)", "'latitude'", "outside [-90, 90]"]),
        ("a,1.0,2.0\nb,1.0,-180.5\n", ["row 2 (line 3)", "'longitude'", "outside [-180, 180]"]),
        ("a,1.0,inf\nb,1.0,3.0\n", ["row 1 (line 2)", "'longitude'", "not finite"]),
        ("a,1.0,2.0\nb,1.0,3.0\na,0,0\n", ["id 'a' appears more than once", "rows 1 and 3"]),
        (",1.0,2.0\n", ["row 1 (line 2)", "'id'", "empty"]),
    ],
)
def test_bad_values_name_row_and_column(tmp_path, pair, rows, fragments):
    _, t = pair
    bad = tmp_path / "pred.csv"
    bad.write_text("id,latitude,longitude\n" + rows)
    _assert_one_line_error(run("score", bad, "-t", t), "pred.csv", *fragments)


def test_bad_value_in_parquet_names_row(tmp_path, pair):
    _, t = pair
    df = pd.DataFrame({"id": ["x", "y"], "latitude": [1.0, float("nan")], "longitude": [0, 0]})
    bad = write(df, tmp_path / "pred.parquet")
    _assert_one_line_error(run("score", bad, "-t", t), "pred.parquet: row 2,", "'latitude'")


def test_empty_files(tmp_path, pair):
    _, t = pair
    empty = tmp_path / "pred.csv"
    empty.write_text("")
    _assert_one_line_error(run("score", empty, "-t", t), "pred.csv", "file is empty")
    empty.write_text("id,latitude,longitude\n")
    _assert_one_line_error(run("score", empty, "-t", t), "pred.csv", "no rows")


def test_ids_on_one_side_fail_unless_allow_missing(tmp_path, pair):
    p, _ = pair
    truth = pd.DataFrame(
        {"id": ["a", "b", "z", "w"], "latitude": [0.0] * 4, "longitude": [0.0] * 4}
    )
    t = write(truth, tmp_path / "truth2.csv")
    _assert_one_line_error(
        run("score", p, "-t", t),
        "id 'c' is not in",
        "--allow-missing",
        "1 prediction ids missing",
        "2 truth ids without",
    )
    res = run("score", p, "-t", t, "--allow-missing", "-f", "json")
    assert res.exit_code == 0, res.output
    m = json.loads(res.stdout)
    assert m["n"] == 2 and m["left_out"] == {"predictions": 1, "truth": 2}
    res = run("score", p, "-t", t, "--allow-missing")
    assert "left out: 1 predictions without truth, 2 truth rows" in " ".join(res.stdout.split())


def test_protocol_needs_its_columns(pair):
    p, t = pair
    _assert_one_line_error(run("score", p, "-t", t, "--protocol", "osv5m"), "unique_country")
    _assert_one_line_error(run("score", p, "-t", t, "--protocol", "entity"), "country_id")


def test_error_leaves_existing_output_untouched(tmp_path, pair):
    p, _ = pair
    out = tmp_path / "metrics.json"
    out.write_text("previous results")
    res = run("score", p, "-t", tmp_path / "missing.csv", "-o", out)
    assert res.exit_code == 2
    assert out.read_text() == "previous results"
    assert [f.name for f in tmp_path.iterdir() if f.name.startswith(".metrics")] == []


def test_verbose_shows_the_traceback(tmp_path, pair):
    _, t = pair
    res = run("--verbose", "score", tmp_path / "nope.csv", "-t", t)
    assert res.exit_code != 0
    from hierloc.errors import InputError

    assert isinstance(res.exception, InputError)


def test_output_that_is_a_folder_is_a_clear_error(tmp_path, pair):
    p, t = pair
    _assert_one_line_error(run("score", p, "-t", t, "-o", tmp_path), "is a folder")


def test_bench_score_runs_small_and_agrees_with_reverse_geocoder(tmp_path):
    """The bench's code path (not its timing): small run, labels equal reverse_geocoder's."""
    out = tmp_path / "bench.json"
    res = run(
        "bench",
        "score",
        "--rows",
        3000,
        "--compare-rows",
        500,
        "--workdir",
        tmp_path,
        "--file-format",
        "csv",
        "-o",
        out,
    )
    assert res.exit_code == 0, res.output
    report = json.loads(out.read_text())
    assert report["rows"] == 3000 and report["metrics"]["n"] == 3000
    assert report["labels_identical"] is True
    assert report["metrics"]["protocol"] == "osv5m"
    assert "within the" in res.stderr or "OVER the" in res.stderr
