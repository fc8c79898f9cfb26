"""sources/movielens.py and its job on hand-written CSVs (exact output) and on the real MovieLens directory."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from jobs.import_movielens import main
from sources.movielens import import_movielens

ROOT = Path(__file__).resolve().parent.parent

RATINGS = [  # userId, movieId, rating, timestamp
    (1, 10, "3.5", 1_000_000_000),  # exactly the threshold: a click
    (1, 20, "3.0", 1_000_000_100),
    (2, 10, "5.0", 1_000_000_200),
    (2, 30, "0.5", 1_000_000_300),
    (3, 40, "4.0", 1_000_000_400),
    (3, 50, "3.49", 1_000_000_500),
]
MOVIES = (
    "movieId,title,genres\r\n"
    "10,Toy Story (1995),Adventure|Animation|Children\r\n"
    '20,"American President, The (1995)",Comedy|Drama|Romance\r\n'
    "30,Hyena Road,(no genres listed)\r\n"
    "40,Rocky VI (1986) ,Comedy\r\n"
    '50,"""Great Performances"" Cats (1998)",Musical\r\n'
    "60,Fawlty Towers (1975-1979),Comedy\r\n"
)
TAGS = 'userId,movieId,tag,timestamp\n1,10,pixar,1000000001\n2,10,"funny, smart",1000000002\n3,30,war,1000000003\n'


def write_tiny(source: Path) -> None:
    source.mkdir()
    with open(source / "ratings.csv", "w", newline="") as fh:
        fh.write("userId,movieId,rating,timestamp\r\n")  # CRLF, as the published files
        for row in RATINGS:
            fh.write(",".join(map(str, row)) + "\r\n")
    (source / "movies.csv").write_bytes(MOVIES.encode())
    (source / "tags.csv").write_text(TAGS)


def rows(path: Path, order: str) -> tuple[dict, list[dict]]:
    """(column types, rows sorted by `order`) of a Spark-written Parquet directory, read with pyarrow."""
    table = pq.read_table(path)  # skips Spark's _SUCCESS and .crc files
    types = {f.name: str(f.type) for f in table.schema}
    return types, sorted(table.to_pylist(), key=lambda r: r[order])


def test_tiny_csvs_give_exact_impressions_clicks_and_items(spark, tmp_path):
    source, raw = tmp_path / "ml", tmp_path / "raw"
    write_tiny(source)
    summary = import_movielens(spark, str(source), str(raw), 3.5)

    imp_types, imp_rows = rows(raw / "impressions", "impression_id")
    assert imp_types == {
        "user_id": "string",
        "item_id": "string",
        "ts": "int64",
        "impression_id": "string",
        "position": "int32",
    }
    assert imp_rows == sorted(
        [
            {"user_id": str(u), "item_id": str(m), "ts": t, "impression_id": f"{u}-{m}-{t}", "position": None}
            for u, m, _, t in RATINGS
        ],
        key=lambda r: r["impression_id"],
    )

    click_types, click_rows = rows(raw / "clicks", "impression_id")
    assert click_types == {"user_id": "string", "item_id": "string", "ts": "int64", "impression_id": "string"}
    assert click_rows == [
        {"user_id": "1", "item_id": "10", "ts": 1_000_000_000, "impression_id": "1-10-1000000000"},
        {"user_id": "2", "item_id": "10", "ts": 1_000_000_200, "impression_id": "2-10-1000000200"},
        {"user_id": "3", "item_id": "40", "ts": 1_000_000_400, "impression_id": "3-40-1000000400"},
    ]

    item_types, item_rows = rows(raw / "items", "item_id")
    assert item_types == {
        "item_id": "string",
        "genres": "string",
        "title": "string",
        "release_year": "int32",
        "num_tags": "int64",
    }
    assert item_rows == [
        {
            "item_id": "10",
            "genres": "Adventure|Animation|Children",
            "title": "Toy Story (1995)",
            "release_year": 1995,
            "num_tags": 2,
        },
        {
            "item_id": "20",
            "genres": "Comedy|Drama|Romance",
            "title": "American President, The (1995)",
            "release_year": 1995,
            "num_tags": 0,
        },
        {"item_id": "30", "genres": "", "title": "Hyena Road", "release_year": None, "num_tags": 1},
        {"item_id": "40", "genres": "Comedy", "title": "Rocky VI (1986)", "release_year": 1986, "num_tags": 0},
        {
            "item_id": "50",
            "genres": "Musical",
            "title": '"Great Performances" Cats (1998)',
            "release_year": 1998,
            "num_tags": 0,
        },
        {
            "item_id": "60",
            "genres": "Comedy",
            "title": "Fawlty Towers (1975-1979)",
            "release_year": 1975,
            "num_tags": 0,
        },
    ]
    assert summary["impressions"] == 6 and summary["clicks"] == 3 and summary["items"] == 6
    assert summary["items_without_year"] == 1 and summary["items_without_genres"] == 1
    assert summary["warnings"] == []


@pytest.mark.slow
def test_threshold_and_rerun_replace_the_output_atomically(spark, tmp_path, capsys):
    source, raw = tmp_path / "ml", tmp_path / "raw"
    write_tiny(source)
    (source / "tags.csv").unlink()  # tags are optional
    raw.mkdir()
    for name in ("_SUCCESS", "_source.json", "stale.txt"):  # an earlier import
        (raw / name).write_text("{}")
    assert main(["--source", str(source), "--output", str(raw), "--click-threshold", "4"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["clicks"] == 2 and summary["click_threshold"] == 4.0
    assert sorted(p.name for p in raw.iterdir()) == ["_SUCCESS", "_source.json", "clicks", "impressions", "items"]
    assert json.loads((raw / "_source.json").read_text())["click_threshold"] == 4.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ml", "raw"]  # no staging left behind
    assert set(pq.read_table(raw / "items").column("num_tags").to_pylist()) == {0}


@pytest.mark.slow
def test_runs_as_a_script_for_spark_submit():
    out = subprocess.run(
        [sys.executable, str(ROOT / "jobs" / "import_movielens.py"), "--help"],
        cwd="/",
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": ""},
    )
    assert out.returncode == 0, out.stderr
    assert "--click-threshold" in out.stdout


@pytest.mark.slow
def test_real_movielens_counts(spark, movielens_dir, tmp_path):
    with open(movielens_dir / "ratings.csv", newline="") as fh:
        ratings = list(csv.DictReader(fh))
    with open(movielens_dir / "movies.csv", newline="") as fh:
        n_movies = sum(1 for _ in csv.DictReader(fh))
    expected_clicks = sum(float(r["rating"]) >= 3.5 for r in ratings)

    raw = tmp_path / "raw"
    summary = import_movielens(spark, str(movielens_dir), str(raw), 3.5)
    assert summary["impressions"] == len(ratings) > 100_000
    assert summary["clicks"] == expected_clicks
    assert pq.read_table(raw / "impressions").num_rows == len(ratings)
    clicks = pq.read_table(raw / "clicks", columns=["impression_id"]).column("impression_id").to_pylist()
    expected_ids = {f"{r['userId']}-{r['movieId']}-{r['timestamp']}" for r in ratings if float(r["rating"]) >= 3.5}
    assert len(clicks) == expected_clicks and set(clicks) == expected_ids
    items = pq.read_table(raw / "items").to_pandas()
    assert len(items) == n_movies and items["item_id"].is_unique
    assert items["release_year"].isna().sum() < 0.01 * n_movies
    assert not items["genres"].str.contains("no genres listed").any()
    assert (items["num_tags"] > 0).any()


@pytest.mark.slow
def test_real_movielens_builds_samples_end_to_end(spark, movielens_dir, tmp_path):
    """MovieLens -> RAW -> SAMPLES: every rating is one sample, labels are the ratings >= 3.5,
    splits follow time, and each user's first rating has an empty history."""
    import numpy as np

    from feature_spec import load_spec
    from pipelines.config import load_config
    from pipelines.samples.build_samples import build_samples
    from tests.samples_io import raw_value, read_all

    with open(movielens_dir / "ratings.csv", newline="") as fh:
        ratings = list(csv.DictReader(fh))
    raw, out = tmp_path / "raw", tmp_path / "samples"
    import_movielens(spark, str(movielens_dir), str(raw), 3.5)
    rep = build_samples(spark, str(raw), str(out), load_config("build_samples", None, ["spark.output_partitions=2"]))

    for name in ("feature_spec.json", "report.json", "_SUCCESS"):
        assert (out / name).exists(), name
    # The shared copy holds a few ratings at timestamp 0 (and one repeated): counted rejects, not samples.
    ts_min = 631152000  # validation.ts_min, 1990-01-01

    def rejected(rows):  # out of range, or a repeat of an in-range row
        in_range = [r for r in rows if int(r["timestamp"]) >= ts_min]
        return len(rows) - len({(r["userId"], r["movieId"], r["timestamp"]) for r in in_range})

    rejected_imps = rejected(ratings)
    rejected_clicks = rejected([r for r in ratings if float(r["rating"]) >= 3.5])
    assert rep["rejected_total"] == {"impressions": rejected_imps, "clicks": rejected_clicks, "items": 0}
    samples = read_all(str(out))
    assert len(samples) == len(ratings) - rejected_imps == sum(v["rows"] for v in rep["samples"].values())
    assert int(samples["label"].sum()) == sum(float(r["rating"]) >= 3.5 for r in ratings) - rejected_clicks
    assert rep["clicks"]["orphan"] == 0
    by_split = samples.groupby("split")["ts"].agg(["min", "max"])
    assert by_split.loc["train", "max"] <= by_split.loc["valid", "min"]
    assert by_split.loc["valid", "max"] <= by_split.loc["test", "min"]

    spec = load_spec(str(out))
    samples["clicks_before"] = np.rint(raw_value(spec, "hist_click_len", samples["hist_click_len"]))
    samples["imps_before"] = np.rint(raw_value(spec, "user_impressions", samples["user_impressions"]))
    earliest_ts = samples.groupby("user_id")["ts"].transform("min")
    # A user's ratings at their very first second have no prior event at all.
    assert (samples.loc[samples["ts"] == earliest_ts, ["clicks_before", "imps_before"]] == 0).all().all()
    assert all(sum(h) == 0 for h in samples.loc[samples["ts"] == earliest_ts, "hist_click_items"])
