"""A churn world (sources/click_model.py, "Churn"): items released and users arriving every day, items that
age out, new items with a launch lift; the events must respect who and what exists when."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow.parquet as pq
import pytest

from jobs.generate_synthetic import main
from sources.click_model import START_TS, Churn, Timeline
from sources.synthetic import generate

DAY = 86400
USERS, ITEMS, DAYS, PER_DAY_ITEMS, PER_DAY_USERS, LIFETIME = 80, 60, 12, 8, 6, 5.0


@pytest.fixture(scope="module")
def churn_world(tmp_path_factory):
    raw = tmp_path_factory.mktemp("churn") / "raw"
    churn = Churn(new_items_per_day=PER_DAY_ITEMS, new_users_per_day=PER_DAY_USERS, item_lifetime_days=LIFETIME)
    summary = generate(str(raw), USERS, ITEMS, DAYS, 60_000, seed=11, churn=churn)
    tables = {name: pq.read_table(raw / name).to_pandas() for name in ("impressions", "clicks", "items")}
    return summary, tables


def test_items_are_released_every_day_and_shown_only_while_on_offer(churn_world):
    summary, t = churn_world
    items = t["items"].set_index("item_id")
    assert len(items) == ITEMS + PER_DAY_ITEMS * (DAYS - 1) == summary["items"]
    released_day = (items.released_ts - START_TS) // DAY
    # The first day's items were released before the start; then PER_DAY_ITEMS on each later day.
    assert (released_day.iloc[:ITEMS] < 0).sum() > 0 and (items.released_ts.iloc[:ITEMS] <= START_TS).all()
    assert released_day.iloc[ITEMS:].value_counts().sort_index().tolist() == [PER_DAY_ITEMS] * (DAYS - 1)
    assert (items.retired_ts - items.released_ts == int(LIFETIME * DAY)).all()
    imps = t["impressions"].join(items[["released_ts", "retired_ts"]], on="item_id")
    assert (imps.ts >= imps.released_ts).all() and (imps.ts < imps.retired_ts).all()
    # Many impressions fall in an item's last hour on offer, so the check above is not vacuous.
    assert (imps.retired_ts - imps.ts < 3600).sum() > 0
    clicks = t["clicks"].join(items.released_ts, on="item_id")  # a click may come after its item retired
    assert (clicks.ts >= clicks.released_ts).all()
    # Every day shows items released that day or the day before: the catalogue turns over.
    imps["day"] = (imps.ts - START_TS) // DAY
    fresh = imps.released_ts >= START_TS + (imps.day - 1) * DAY
    assert fresh.groupby(imps.day).mean().iloc[1:].min() > 0.1
    # Every event's item exists: the first day's items are gone by the end of their lifetime.
    last_day = imps[imps.day == DAYS - 1]
    assert last_day.released_ts.min() >= START_TS + (DAYS - 1 - LIFETIME - 1) * DAY


def test_users_arrive_every_day_and_act_only_after_arriving(churn_world):
    summary, t = churn_world
    timeline = Timeline(
        Churn(PER_DAY_ITEMS, PER_DAY_USERS, LIFETIME), USERS, ITEMS, DAYS, seed=11
    )  # what generate drew, from the seed alone
    arrival = pd.Series(timeline.user_arrival, index=[f"u{k:05d}" for k in range(1, len(timeline.user_arrival) + 1)])
    assert summary["users"] == USERS + PER_DAY_USERS * (DAYS - 1) == len(arrival)
    for name in ("impressions", "clicks"):
        events = t[name]
        assert (events.ts >= arrival.loc[events.user_id].to_numpy()).all(), name
    first_seen = t["impressions"].groupby("user_id").ts.min()
    late = first_seen[arrival.loc[first_seen.index] > START_TS]
    assert len(late) > PER_DAY_USERS * (DAYS - 1) // 2  # most later users do show up


def test_a_new_item_gets_a_launch_lift_that_fades_and_some_become_popular(churn_world):
    _, t = churn_world
    items = t["items"].set_index("item_id")
    imps = t["impressions"].join(items.released_ts, on="item_id")
    later = imps[imps.released_ts > START_TS]
    age = (later.ts - later.released_ts) // DAY
    per_item_day = later.groupby([later.item_id, age]).size().unstack(fill_value=0)
    # Mean impressions per item on its first day against its fourth (both within the lifetime).
    assert per_item_day[0].mean() > 1.5 * per_item_day[3].mean()
    # Some new items are among the most shown items of their release day.
    imps["day"] = (imps.ts - START_TS) // DAY
    top = imps.groupby(["day", "item_id"]).size().groupby(level=0).nlargest(5).reset_index(level=0, drop=True)
    top_items = top.reset_index()
    new_in_top = items.released_ts.loc[top_items.item_id].to_numpy() >= START_TS + top_items.day.to_numpy() * DAY - DAY
    assert new_in_top.mean() > 0.2


def test_p_click_stays_recorded_and_clicks_follow_it(churn_world):
    _, t = churn_world
    imps = t["impressions"]
    assert imps.p_click.between(0, 1).all()
    assert abs(len(t["clicks"]) / len(imps) - imps.p_click.mean()) < 0.02


def test_too_few_items_on_offer_is_refused_with_a_clear_error(tmp_path, capsys):
    args = ["--output", str(tmp_path / "raw"), "--items", "20", "--days", "6", "--impressions", "2000"]
    assert main([*args, "--new-items-per-day", "1", "--item-lifetime-days", "2"]) == 2
    assert "items are on offer at some hour" in capsys.readouterr().err
    assert not (tmp_path / "raw").exists()
    assert main([*args, "--new-users-per-day", "-1"]) == 2
    assert main([*args, "--new-items-per-day", "3", "--item-lifetime-days", "5"]) == 0
    summary = json.loads(capsys.readouterr().out.split("\noutputs:")[0].split("error")[-1])
    assert summary["items_released_later"] == 15
    manifest = json.loads((tmp_path / "raw" / "_generator.json").read_text())
    assert manifest["params"]["churn"]["item_lifetime_days"] == 5.0 and manifest["params"]["items"] == 20


def test_the_same_churn_arguments_give_the_same_files(tmp_path):
    churn = Churn(new_items_per_day=4, new_users_per_day=2, item_lifetime_days=4.0)
    for name in ("a", "b"):
        generate(str(tmp_path / name), 30, 30, 5, 5000, seed=3, churn=churn)
    for sub in ("impressions", "clicks", "items"):
        a = sorted((tmp_path / "a" / sub).iterdir())
        b = sorted((tmp_path / "b" / sub).iterdir())
        assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
