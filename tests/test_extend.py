"""build_samples --fit-only --extend SPEC_OLD: a vocabulary that grows without moving any existing index.

On a 4-day churn world (items released and users arriving every day), partitioned by date: v1 is fitted on
days 1-2 with OOV buckets, v2 extends it with days 3-4, v3 extends v2 with day 4 and refits the statistics."""

import os

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

import feature_spec
from jobs import build_samples as build_job
from pipelines.errors import ConfigError
from pipelines.samples import build_samples as job
from pipelines.samples import days as daily
from pipelines.samples import fitting
from pipelines.samples.windows import day_start
from sources.click_model import Churn
from sources.synthetic import generate
from tests.daily_world import D, day_config, day_samples, partition_by_date

pytestmark = pytest.mark.slow
DAY = 86400
BUCKETS = "vocab.oov_buckets={user_id: 5, item_id: 7}"


def _vocab(spec_dir: str, name: str) -> pd.DataFrame:
    return pq.read_table(os.path.join(spec_dir, "vocab", name)).to_pandas().sort_values("index")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("extend")
    churn = Churn(new_items_per_day=6, new_users_per_day=8)
    generate(str(root / "flat"), users=50, items=30, days=4, impressions=4000, seed=5, churn=churn)
    partition_by_date(str(root / "flat"), str(root / "raw"))
    return {"root": root, "flat": str(root / "flat"), "raw": str(root / "raw")}


@pytest.fixture(scope="module")
def grown(world, spark):
    root, raw, config = world["root"], world["raw"], day_config(BUCKETS)
    specs = {name: str(root / name) for name in ("v1", "v2", "v3")}

    def fit(name, first, last, **plan):
        window = daily.fit_window(config, first, last)
        job.build_samples(spark, raw, specs[name], config, job.Plan(window=window, fit_only=True, **plan))

    fit("v1", D[0], D[1])
    fit("v2", D[2], D[3], extend_dir=specs["v1"])
    fit("v3", D[3], D[3], extend_dir=specs["v2"], refit_statistics=True)
    days = {}
    for name in ("v1", "v2"):
        out = str(root / f"day4-{name}")
        daily.build_days(spark, raw, out, config, specs[name], [D[3]])
        days[name] = day_samples(out, D[3])
    return specs, days, {name: feature_spec.load_spec(folder) for name, folder in specs.items()}


def test_every_token_keeps_its_index_and_the_new_ones_are_appended_by_count(grown, world):
    specs, _, spec = grown
    raw = pq.read_table(os.path.join(world["flat"], "impressions")).to_pandas()
    window = raw[(raw.ts >= _start(D[2])) & (raw.ts < _start(D[3]) + DAY)]
    for name in ("user_id", "item_id"):
        old, new = _vocab(specs["v1"], name), _vocab(specs["v2"], name)
        size = feature_spec.get_vocabulary(spec["v1"], name)["size"]
        kept = new[new["index"] < size]
        pd.testing.assert_frame_equal(kept.reset_index(drop=True), old.reset_index(drop=True))
        counts = window[name].value_counts()
        fresh = counts[~counts.index.isin(old.token)]
        expected = sorted(fresh.items(), key=lambda tc: (-tc[1], tc[0]))
        appended = new[new["index"] >= size]
        assert len(fresh) > 0, name  # days 3-4 bring ids the fit on days 1-2 never saw
        assert list(zip(appended.token, appended["count"])) == expected, name
        assert appended["index"].tolist() == list(range(size, size + len(fresh)))
        entry = feature_spec.get_vocabulary(spec["v2"], name)
        assert entry["size"] == size + len(fresh) and entry["num_tokens"] == len(new)
        assert (
            feature_spec.oov_bucket_count(entry)
            == feature_spec.oov_bucket_count(feature_spec.get_vocabulary(spec["v1"], name))
            == {"user_id": 5, "item_id": 7}[name]
        )


def test_the_new_spec_names_its_lineage_and_keeps_the_statistics(grown):
    _, _, spec = grown
    v1, v2, v3 = spec["v1"], spec["v2"], spec["v3"]
    assert v2["lineage"] == {
        "parent": v1["spec_hash"],
        "ancestors": [v1["spec_hash"]],
        "extends": {name: entry["size"] for name, entry in sorted(v1["vocabularies"].items())},
    }
    assert v3["lineage"]["ancestors"] == [v2["spec_hash"], v1["spec_hash"]]
    assert feature_spec.descends_from(v3, v1["spec_hash"]) and feature_spec.descends_from(v2, v2["spec_hash"])
    assert not feature_spec.descends_from(v1, v2["spec_hash"])
    assert len({v1["spec_hash"], v2["spec_hash"], v3["spec_hash"]}) == 3

    def statistics(s):
        inputs = feature_spec.model_inputs(s)
        return (
            s["smoothed_ctr"],
            {e["name"]: e["normalization"] for e in inputs if e["kind"] == "numeric"},
            {e["name"]: e["bucketization"] for e in inputs if e.get("bucketization")},
        )

    assert statistics(v2) == statistics(v1)  # kept by default
    assert statistics(v3)[1] != statistics(v2)[1]  # refitted on request
    # v3's vocabularies grow v2's: v2's rows as they were, then day 4's new ones (none, if it brings none new).
    specs = grown[0]
    for name in v2["vocabularies"]:
        assert v3["vocabularies"][name]["size"] >= v2["vocabularies"][name]["size"]
        kept = _vocab(specs["v3"], name)
        kept = kept[kept["index"] < v2["vocabularies"][name]["size"]].reset_index(drop=True)
        pd.testing.assert_frame_equal(kept, _vocab(specs["v2"], name).reset_index(drop=True))


def test_a_day_built_with_the_grown_spec_differs_only_where_a_token_is_new(grown):
    specs, days, spec = grown
    old, new = days["v1"], days["v2"]
    key = ["user_id", "ts", "item_id", "position_idx"]
    old, new = old.sort_values(key).reset_index(drop=True), new.sort_values(key).reset_index(drop=True)
    assert len(old) == len(new) > 0
    for name, index in (("user_id", "user_idx"), ("item_id", "item_idx")):
        known = set(_vocab(specs["v1"], name).token)
        was_known = new[name].isin(known)
        assert (~was_known).sum() > 0, name
        np.testing.assert_array_equal(new.loc[was_known, index], old.loc[was_known, index])
        size = feature_spec.get_vocabulary(spec["v1"], name)["size"]
        assert (new.loc[~was_known, index] >= size).all()  # their own rows now
        entry = feature_spec.get_vocabulary(spec["v1"], name)
        assert old.loc[~was_known, index].tolist() == [
            feature_spec.oov_index_of(entry, t) for t in new.loc[~was_known, name]
        ]
    # The statistics are the parent's, so every numeric input is the same number in both builds.
    for entry in feature_spec.model_inputs(spec["v1"]):
        if entry["kind"] == "numeric":
            np.testing.assert_array_equal(np.stack(new[entry["name"]]), np.stack(old[entry["name"]]), entry["name"])


def test_extend_is_refused_without_fit_only_and_across_sample_settings(grown, world, spark, tmp_path, capsys):
    specs, _, _ = grown
    args = ["--input", world["raw"], "--output", str(tmp_path / "x"), "--extend", specs["v1"]]
    with pytest.raises(SystemExit):
        build_job.parse_args(args)
    assert "--extend grows a spec into a new one: it needs --fit-only" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build_job.parse_args([*args[:4], "--fit-only", "--refit-statistics"])
    other = day_config(BUCKETS, "labels.attribution_window_minutes=5")
    plan = job.Plan(window=daily.fit_window(other, D[2], D[3]), fit_only=True, extend_dir=specs["v1"])
    with pytest.raises(ConfigError, match="attribution_window_minutes") as refused:
        job.build_samples(spark, world["raw"], str(tmp_path / "y"), other, plan)
    assert str(refused.value).startswith(f"--extend {specs['v1']} was fitted under other sample settings")
    assert not (tmp_path / "y").exists()
    missing = job.Plan(window=plan.window, fit_only=True, extend_dir=str(tmp_path / "nothing"))
    with pytest.raises(fitting.SpecNotApplicable, match=r"^--extend .*nothing has no feature_spec.json"):
        job.build_samples(spark, world["raw"], str(tmp_path / "z"), day_config(BUCKETS), missing)


def _start(day) -> int:
    return day_start(day, "UTC")
