"""The candidate-hash dedup of validation against the plain window over every row (its reference)."""

import random

from pyspark.sql import functions as F

from features import validate

T0 = 1767225600  # 2026-01-01T00:00:00Z
IMP_SCHEMA = "user_id string, item_id string, ts string, impression_id string, position int, extra string"


def _generated_impressions(seed: int, n: int) -> list[tuple]:
    """Tie-heavy rows: few users, items, seconds and ids, so repeats of every kind occur."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        rows.append(
            (
                rng.choice(["u1", "u2", " u3 ", None, ""]),
                rng.choice(["i1", "i2", "i3"]),
                rng.choice([str(T0), str(T0 + 1), str(T0 + 2), "x", str(T0 * 1000)]),
                rng.choice([None, None, "a", "b", " a"]),
                rng.choice([None, 1, 2]),
                rng.choice(["p", "q", "r"]),
            )
        )
    return rows


def _outcome(df) -> list[tuple]:
    return sorted(
        (r[0] or "", r[1]) for r in df.select("reject_reason", F.to_json(validate.RAW).alias("raw")).collect()
    )


def test_candidate_dedup_matches_the_window_over_every_row(spark):
    rows = _generated_impressions(7, 400)
    for dataset in ("impressions", "clicks"):
        df = spark.createDataFrame(rows, IMP_SCHEMA)
        if dataset == "clicks":
            df = df.drop("position")
        fast = validate.validate_events(df, dataset, "1990-01-01", "2100-01-01")
        # A limit below zero sends every row through the window: the simple reference.
        reference = validate.validate_events(df, dataset, "1990-01-01", "2100-01-01", broadcast_limit=-1)
        got, want = _outcome(fast), _outcome(reference)
        assert got == want
        assert len(got) == len(rows)
        reason = {"impressions": "duplicate_impression", "clicks": "duplicate_click"}[dataset]
        assert sum(r[0] == reason for r in got) > 20  # the data really has repeats


def test_persisted_candidates_give_the_same_rejects_and_are_the_frame_the_join_reads(spark):
    df = spark.createDataFrame(_generated_impressions(11, 300), IMP_SCHEMA)
    normalized = validate.normalize_events(df, "impressions", "1990-01-01", "2100-01-01")
    kept = []

    def persist(frame):
        kept.append(frame.persist())
        return frame

    try:
        flagged = validate.flag_duplicates(normalized, "impressions", persist=persist)
        reference = validate.flag_duplicates(normalized, "impressions", broadcast_limit=-1)
        assert _outcome(flagged) == _outcome(reference)
        (candidates,) = kept
        assert candidates.is_cached
        # Only identities seen more than once: far fewer rows than the input.
        assert 0 < candidates.count() < df.count() / 3
    finally:
        for frame in kept:
            frame.unpersist()


def test_a_row_seen_once_is_never_a_duplicate_even_beside_repeats(spark):
    rows = [
        ("u1", "i1", str(T0), None, 1, "a"),
        ("u1", "i1", str(T0), None, 1, "b"),  # same identity
        ("u1", "i1", str(T0), None, 2, "c"),  # other position: another impression
        ("u1", "i1", str(T0 + 1), "s1", None, "d"),
        ("u1", "i2", str(T0 + 5), "s1", None, "e"),  # one slate
        ("u1", "i1", str(T0 + 9), "s1", None, "f"),
    ]  # repeats s1's i1, later
    df = spark.createDataFrame(rows, IMP_SCHEMA)
    out = validate.validate_events(df, "impressions", "1990-01-01", "2100-01-01")
    got = sorted(
        (r["extra"], r["reject_reason"]) for r in out.select("reject_reason", f"{validate.RAW}.extra").collect()
    )
    assert got == [
        ("a", None),
        ("b", "duplicate_impression"),
        ("c", None),
        ("d", None),
        ("e", None),
        ("f", "duplicate_impression"),
    ]
