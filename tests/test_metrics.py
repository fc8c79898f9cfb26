"""pipelines.training.metrics on hand-made arrays, values computed by hand in the comments."""

import math

import numpy as np
import pytest

from pipelines.training import metrics


def test_auc_counts_ties_as_half():
    # pairs (pos, neg): (0.8, 0.8) tie -> 0.5, (0.8, 0.1) -> 1, (0.3, 0.8) -> 0, (0.3, 0.1) -> 1
    assert metrics.auc([1, 0, 1, 0], [0.8, 0.8, 0.3, 0.1]) == pytest.approx(2.5 / 4)


def test_auc_perfect_inverted_constant_and_single_class():
    assert metrics.auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert metrics.auc([1, 1, 0, 0], [0.1, 0.2, 0.3, 0.4]) == 0.0
    assert metrics.auc([1, 0, 1, 0, 0], [0.5] * 5) == 0.5
    assert math.isnan(metrics.auc([1, 1], [0.2, 0.3]))


def test_auc_matches_pair_counting_on_random_ties():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    s = rng.integers(0, 10, 300) / 10.0  # many ties
    pos, neg = s[y == 1], s[y == 0]
    pairs = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    assert metrics.auc(y, s) == pytest.approx(pairs / (len(pos) * len(neg)), abs=1e-12)


# Moved from test_generate_synthetic.py with the generator's own AUC, which this one replaced
# (same assertions, in this module's (labels, scores) argument order).
def test_auc_matches_pairwise_definition_with_ties():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, size=200).astype(float)  # many ties
    labels = rng.random(200) < 0.3
    pos, neg = scores[labels], scores[~labels]
    pairwise = ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (
        len(pos) * len(neg)
    )
    assert metrics.auc(labels, scores) == pytest.approx(pairwise, abs=1e-12)
    assert metrics.auc([0, 1], [0.1, 0.9]) == 1.0
    assert metrics.auc([0, 1], [0.9, 0.1]) == 0.0
    assert metrics.auc([0, 1, 1], [0.5, 0.5, 0.5]) == 0.5


def test_gauc_weights_by_impressions_and_skips_single_class_users():
    users = ["a", "a", "a", "b", "b", "c", "c", "d", "e", "e"]
    labels = [1, 0, 0, 0, 1, 1, 1, 0, 1, 0]
    scores = [0.9, 0.1, 0.5, 0.7, 0.2, 0.3, 0.4, 0.6, 0.4, 0.4]
    # a: auc 1 (3 impressions); b: auc 0 (2); c: only clicks, skipped; d: one impression, skipped;
    # e: tie -> 0.5 (2).  gauc = (3 * 1 + 2 * 0 + 2 * 0.5) / (3 + 2 + 2) = 4 / 7
    assert metrics.gauc(users, labels, scores) == pytest.approx(4 / 7)
    assert math.isnan(metrics.gauc(["c", "c", "d"], [1, 1, 0], [0.1, 0.2, 0.3]))


def test_gauc_with_one_user_equals_auc():
    labels, scores = [1, 0, 1, 0], [0.8, 0.8, 0.3, 0.1]
    assert metrics.gauc([7, 7, 7, 7], labels, scores) == pytest.approx(metrics.auc(labels, scores))


def test_logloss_by_hand_and_clipped():
    assert metrics.logloss([1, 0], [0.8, 0.4]) == pytest.approx(-(math.log(0.8) + math.log(0.6)) / 2)
    # a confident mistake is clipped at eps = 1e-7, not infinite
    assert metrics.logloss([0], [1.0]) == pytest.approx(-math.log(1e-7), rel=1e-6)
    assert metrics.logloss([1], [0.0]) == pytest.approx(-math.log(1e-7), rel=1e-6)


def test_pr_auc_average_precision():
    # ranked: + (P 1, R .5), -, + (P 2/3, R 1), -  ->  .5 * 1 + .5 * 2/3
    assert metrics.pr_auc([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1]) == pytest.approx(0.5 + 0.5 * 2 / 3)
    # tied scores are one threshold: 0.9 -> (P 1, R .5); 0.5 -> (P 2/3, R 1)
    assert metrics.pr_auc([1, 0, 1], [0.9, 0.5, 0.5]) == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert metrics.pr_auc([0, 1], [0.1, 0.9]) == 1.0
    assert math.isnan(metrics.pr_auc([0, 0], [0.1, 0.9]))


def test_calibration():
    assert metrics.calibration([0, 1], [0.2, 0.4]) == pytest.approx(0.3 / 0.5)
    assert metrics.calibration([0, 1, 1, 0], [0.5, 0.5, 0.5, 0.5]) == pytest.approx(1.0)
    assert math.isnan(metrics.calibration([0, 0], [0.2, 0.4]))


def test_evaluate_and_bad_input():
    out = metrics.evaluate([1, 0, 1, 0], [0.8, 0.8, 0.3, 0.1], users=["a", "a", "b", "b"])
    assert set(out) == set(metrics.METRIC_NAMES)
    assert out["auc"] == pytest.approx(0.625)
    assert out["gauc"] == pytest.approx((2 * 0.5 + 2 * 1.0) / 4)
    with pytest.raises(ValueError, match="NaN"):
        metrics.auc([1, 0], [0.5, float("nan")])
    with pytest.raises(ValueError, match="0 or 1"):
        metrics.auc([2, 0], [0.5, 0.4])
    with pytest.raises(ValueError, match="length"):
        metrics.auc([1, 0, 1], [0.5, 0.4])
