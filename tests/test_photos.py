"""``hierloc data from-photos``: EXIF GPS (DMS + N/S/E/W) against hand-computed degrees."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from PIL import ExifTags, Image
from typer.testing import CliRunner

from hierloc.cli import app

runner = CliRunner()


def photo(path, gps=None, when=None):
    exif = Image.Exif()
    if gps is not None:
        exif[ExifTags.IFD.GPSInfo] = gps
    if when:
        exif[0x0132] = when
    Image.new("RGB", (16, 12), (10, 20, 30)).save(path, exif=exif)


def test_from_photos(tmp_path):
    d = tmp_path / "photos"
    (d / "trip").mkdir(parents=True)
    photo(
        d / "eiffel.jpg",
        {1: "N", 2: (48.0, 51.0, 29.6), 3: "E", 4: (2.0, 17.0, 40.2)},
        "2024:05:01 10:00:00",
    )
    photo(d / "trip" / "rio.jpg", {1: "S", 2: (22.0, 57.0, 7.2), 3: "W", 4: (43.0, 12.0, 36.0)})
    photo(d / "nogps.jpg")
    photo(d / "badref.jpg", {1: "X", 2: (10.0, 0.0, 0.0), 3: "E", 4: (10.0, 0.0, 0.0)})
    photo(d / "badmin.jpg", {1: "N", 2: (10.0, 75.0, 0.0), 3: "E", 4: (10.0, 0.0, 0.0)})
    photo(d / "range.jpg", {1: "N", 2: (95.0, 0.0, 0.0), 3: "E", 4: (10.0, 0.0, 0.0)})
    (d / "broken.jpg").write_bytes(b"\xff\xd8garbage")
    out = tmp_path / "meta.parquet"
    res = runner.invoke(app, ["data", "from-photos", str(d), "-o", str(out), "-f", "json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert (summary["photos"], summary["with_gps"], summary["rejected"]) == (7, 2, 5)
    assert summary["rejected_by_reason"] == {"malformed GPS": 3, "no GPS": 1, "unreadable image": 1}
    df = pd.read_parquet(out).set_index("id")
    assert df.loc["eiffel", "latitude"] == pytest.approx(48 + 51 / 60 + 29.6 / 3600)
    assert df.loc["eiffel", "longitude"] == pytest.approx(2 + 17 / 60 + 40.2 / 3600)
    assert df.loc["trip/rio", "latitude"] == pytest.approx(-(22 + 57 / 60 + 7.2 / 3600))
    assert df.loc["trip/rio", "longitude"] == pytest.approx(-(43 + 12 / 60 + 36 / 3600))
    assert df.loc["eiffel", "captured_at"] == "2024:05:01 10:00:00"
    assert df.loc["trip/rio", "path"] == "photos/trip/rio.jpg"  # from the output's folder
    rejects = pd.read_csv(tmp_path / "meta.rejects.csv").set_index("path")
    assert rejects.loc["nogps.jpg", "reason"] == "no GPS position in EXIF"
    assert "reference" in rejects.loc["badref.jpg", "reason"]
    assert "out of range" in rejects.loc["range.jpg", "reason"]


def test_gps_without_hemisphere_references_is_rejected_not_read_as_north_east(tmp_path):
    d = tmp_path / "photos"
    d.mkdir()
    photo(d / "noref.jpg", {2: (33.0, 52.0, 0.0), 4: (151.0, 12.0, 0.0)})  # Sydney, no S/E
    photo(d / "ok.jpg", {1: "S", 2: (33.0, 52.0, 0.0), 3: "E", 4: (151.0, 12.0, 0.0)})
    out = tmp_path / "meta.parquet"
    res = runner.invoke(app, ["data", "from-photos", str(d), "-o", str(out), "-f", "json"])
    assert res.exit_code == 0, res.output
    assert list(pd.read_parquet(out)["id"]) == ["ok"]
    rejects = pd.read_csv(tmp_path / "meta.rejects.csv").set_index("path")
    assert "without GPSLatitudeRef and GPSLongitudeRef" in rejects.loc["noref.jpg", "reason"]


def test_zero_denominators_and_duplicate_ids_are_rejected_with_their_reason(tmp_path):
    from PIL.TiffImagePlugin import IFDRational

    d = tmp_path / "photos"
    d.mkdir()
    ok = {1: "N", 2: (48.0, 51.0, 29.6), 3: "E", 4: (2.0, 17.0, 40.2)}
    zero = IFDRational(1, 0)
    photo(d / "zeroden.jpg", {1: "N", 2: (zero, 0.0, 0.0), 3: "E", 4: (2.0, 21.0, 0.0)})
    photo(d / "zeroall.jpg", {1: "N", 2: (zero, zero, zero), 3: "E", 4: (zero, zero, zero)})
    photo(d / "x.jpg", ok)
    photo(d / "x.jpeg", ok)
    photo(d / "y.jpg", ok)
    out = tmp_path / "meta.parquet"
    res = runner.invoke(app, ["data", "from-photos", str(d), "-o", str(out), "-f", "json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert (summary["photos"], summary["with_gps"], summary["rejected"]) == (5, 1, 4)
    assert summary["rejected_by_reason"] == {"duplicate id": 2, "malformed GPS": 2}
    df = pd.read_parquet(out)
    assert list(df["id"]) == ["y"] and df[["latitude", "longitude"]].notna().all().all()
    rejects = pd.read_csv(tmp_path / "meta.rejects.csv").set_index("path")
    assert "zero denominator" in rejects.loc["zeroden.jpg", "reason"]
    assert "zero denominator" in rejects.loc["zeroall.jpg", "reason"]
    assert "duplicate id 'x' (also x.jpg)" in rejects.loc["x.jpeg", "reason"]


def test_corrupt_exif_is_a_reject_reason_not_a_warning(tmp_path):
    """Pillow warns "Corrupt EXIF data" on a truncated GPS IFD; the photo is rejected with
    that reason and no warning escapes (pytest turns warnings into errors here)."""
    d = tmp_path / "photos"
    d.mkdir()
    exif = (
        b"Exif\x00\x00II*\x00\x08\x00\x00\x00\x05\x00"
        b"\x25\x88\x04\x00\x01\x00\x00\x00\xff\xff\x00\x00"  # a GPS IFD pointer past the end
    )
    Image.new("RGB", (8, 8)).save(d / "broken_exif.jpg", exif=exif)
    photo(d / "ok.jpg", {1: "N", 2: (48.0, 51.0, 29.6), 3: "E", 4: (2.0, 17.0, 40.2)})
    out = tmp_path / "meta.parquet"
    res = runner.invoke(app, ["data", "from-photos", str(d), "-o", str(out), "-f", "json"])
    assert res.exit_code == 0, res.output
    assert list(pd.read_parquet(out)["id"]) == ["ok"]
    reason = pd.read_csv(tmp_path / "meta.rejects.csv").set_index("path").loc["broken_exif.jpg"]
    assert "Corrupt EXIF data" in reason["reason"] and "Warning" not in res.stderr


def test_the_metadata_file_leads_extract_to_every_photo(tmp_path):
    """from-photos writes its file outside the photo folder; extract, reading paths from that
    file's folder, finds every photo."""
    d = tmp_path / "photos" / "trip"
    d.mkdir(parents=True)
    photo(d / "a.jpg", {1: "N", 2: (48.0, 51.0, 29.6), 3: "E", 4: (2.0, 17.0, 40.2)})
    photo(d / "b.jpg", {1: "S", 2: (22.0, 57.0, 7.2), 3: "W", 4: (43.0, 12.0, 36.0)})
    out = tmp_path / "meta" / "meta.parquet"
    out.parent.mkdir()
    res = runner.invoke(app, ["data", "from-photos", str(tmp_path / "photos"), "-o", str(out)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(
        app, ["extract", str(out), "-o", str(tmp_path / "f"), "--workers", "0", "-f", "json"]
    )
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["images"] == 2 and summary["rejected"] == 0
