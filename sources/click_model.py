"""The generative click model behind the synthetic raw data (`sources/synthetic.py` writes it).

Pure numpy; no Spark. The simulator keeps per-user and per-item state only
(O(users + items)) and produces the impressions and clicks of one time step at
a time, so the writer can write them out chunk by chunk with bounded memory.

World (drawn once from the seed)
--------------------------------
- G named genres (`GENRES`) with a skewed frequency. Each item has 1-3 distinct
  genres; the first listed is its primary genre. Genre weights of item i:
  w_ig = 1 for a single genre, else 0.6 for the primary and 0.4 shared by the others.
- Latent factors (dimension D = 8): genre centroids c_g ~ N(0, 0.35^2 I);
  item vectors v_i = c_{primary(i)} + N(0, 0.45^2 I); user vectors u_u ~ N(0, 0.55^2 I).
- Per-user genre affinity a_ug ~ N(0, 0.35^2), plus +0.7 on two favourite genres.
- Item popularity pop_i ~ LogNormal(0, 1.3) (heavy-tailed); items are shown with
  probability proportional to pop_i. Item quality (a click-logit offset, partly
  correlated with popularity): q_i = 0.45 (0.5 z_i + 0.87 e_i), z_i the standardized
  log pop_i, e_i ~ N(0, 1).
- User activity act_u ~ LogNormal(0, 1.0): the user of each request is drawn with
  probability proportional to act_u.

Time
----
Hourly steps from 2026-01-01T00:00:00Z over `days` days. Step s gets a share of
the impressions proportional to (1 + 0.6 cos(2 pi (hour - 20) / 24)) (evening
peak, night trough), times 1.15 on weekends. A step is a set of requests
(slates): each has a user, a time uniform within the hour and a length
k in 1..10 with P(k) ~ 0.85^(k-1); it shows k distinct items at positions 1..k.

Click model
-----------
With h_u the user's recent-click vector (state, see below), an impression of
item i to user u at position p is clicked with probability

    p_click = sigmoid( b0 + q_i + u_u . v_i + sum_g w_ig a_ug + gamma h_u . v_i - delta ln p )

with b0 = -2.6, gamma = 1.0, delta = 0.45. `p_click` is stored on the impression row.

Recent clicks: h_u starts at 0 and on every click of user u on item j (in click-time
order) h_u <- (1 - alpha) h_u + alpha v_j with alpha = 0.3 (an exponential moving
average of the latent vectors of the user's recent clicks). A click updates the
state from its own time on: clicks are applied at the start of the first step
after their time, so an impression never depends on a later click.

Item vectors (optional, `item_vectors`)
---------------------------------------
A dense "content" vector per item, as a text encoder would give: a noisy random
projection of the item's latent factors, x_i = W v_i + e_i with W ~ N(0, 1/D) of shape
(dim, D) and e_i ~ N(0, s^2 I), s = `noise` times the standard deviation of W v.
They are drawn from their own random stream (the seed and a constant), so the
rest of the data is the same with or without them. How informative they are is
measured as the R^2 of the least-squares reconstruction of v from x over the catalog
(`vector_r2`): the click model's u . v and h . v terms are linear in v.

Churn (optional, `Churn` and `Timeline`)
----------------------------------------
A catalogue and an audience that change over the days, as a real service's do. `new_items_per_day` items
are released on each day after the first, at a uniform time of their day, and `new_users_per_day` users
arrive the same way; with `item_lifetime_days` L, an item is offered for L days after its release (the
first day's items were released at uniform times in the L days before the start, so they age out in turn).
An item is shown at step t only when it is on offer for the whole hour (released by the hour's start, not
retired before its end), with weight

    pop_i * (1 + launch_boost * exp(-age_i(t) / launch_days))      (age in days since its release)

so a new item gets a launch lift that fades, and a new item with a high pop_i (the same LogNormal as the
others) becomes popular at once. A user makes requests only once arrived, with weight act_u. Release and
arrival times come from their own random stream (the seed and a constant); everything else is drawn as
for a world without churn, over all the users and items there will be.

Click logs
----------
A click's time is the impression time plus a delay: exponential with mean 2
minutes, at least 1 s and at most 29 min 59 s, except for `LATE_FRACTION` (1.5 %)
of clicks that arrive 35-120 minutes later (uniform). A click carries its
impression's `impression_id` with probability 0.8 and null otherwise. Besides,
orphan clicks (0.5 % of all clicks) with a uniformly random user, item and time in
the step and no impression at all are added, with null `impression_id`; they
also update the user's recent-click state.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

GENRES = (
    "Drama",
    "Comedy",
    "Action",
    "Thriller",
    "Romance",
    "Adventure",
    "Crime",
    "Sci-Fi",
    "Horror",
    "Fantasy",
    "Animation",
    "Mystery",
    "Documentary",
    "Family",
    "Western",
)
START_TS = 1767225600  # 2026-01-01T00:00:00Z
STEP_SECONDS = 3600
MAX_POSITION = 10


@dataclass(frozen=True)
class ClickModel:
    dim: int = 8
    genre_centroid_scale: float = 0.35
    item_noise_scale: float = 0.45
    user_scale: float = 0.55
    affinity_scale: float = 0.35
    favourite_boost: float = 0.7
    favourite_genres: int = 2
    popularity_sigma: float = 1.3
    quality_scale: float = 0.45
    quality_popularity_corr: float = 0.5
    activity_sigma: float = 1.0
    bias: float = -2.6
    recency_coef: float = 1.0
    ema_alpha: float = 0.3
    position_coef: float = 0.45
    slate_decay: float = 0.85
    delay_mean_s: float = 120.0
    delay_cap_s: int = 30 * 60 - 1
    late_fraction: float = 0.015
    late_min_s: int = 35 * 60
    late_max_s: int = 120 * 60
    id_fraction: float = 0.8
    orphan_fraction: float = 0.005


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


class World:
    """Users, items and their parameters, drawn once from `rng`."""

    def __init__(self, n_users: int, n_items: int, rng: np.random.Generator, model: ClickModel = ClickModel()):
        """`n_users` and `n_items`: every user and item there will be (with churn, the later ones too)."""
        if n_users < 1 or n_items < MAX_POSITION:
            raise ValueError(f"need at least 1 user and {MAX_POSITION} items (got {n_users}, {n_items})")
        self.model = m = model
        self.n_users, self.n_items = n_users, n_items
        n_genres = len(GENRES)
        genre_freq = 1.0 / np.arange(1, n_genres + 1) ** 0.8
        genre_freq /= genre_freq.sum()
        self.genre_freq = genre_freq

        # Items: 1-3 distinct genres, primary first (Gumbel top-k on log frequency).
        n_genres_item = rng.choice(3, size=n_items, p=[0.45, 0.35, 0.20]) + 1
        keys = np.log(genre_freq)[None, :] + rng.gumbel(size=(n_items, n_genres))
        order = np.argsort(-keys, axis=1)[:, :3]
        self.item_genre_idx = order  # first n_genres_item[i] columns are the item's genres
        self.item_n_genres = n_genres_item
        weights = np.zeros((n_items, n_genres))
        rows = np.arange(n_items)
        single = n_genres_item == 1
        weights[rows, order[:, 0]] = np.where(single, 1.0, 0.6)
        for j in (1, 2):
            has = n_genres_item > j
            weights[rows[has], order[has, j]] = 0.4 / (n_genres_item[has] - 1)
        self.item_genre_w = weights

        centroids = rng.normal(0.0, m.genre_centroid_scale, size=(n_genres, m.dim))
        self.item_vec = centroids[order[:, 0]] + rng.normal(0.0, m.item_noise_scale, size=(n_items, m.dim))
        log_pop = rng.normal(0.0, m.popularity_sigma, size=n_items)
        z = (log_pop - log_pop.mean()) / (log_pop.std() + 1e-12)
        rho = m.quality_popularity_corr
        self.item_quality = m.quality_scale * (rho * z + np.sqrt(1 - rho * rho) * rng.normal(size=n_items))
        pop = np.exp(log_pop)
        self.item_pop = pop
        self.item_cdf = np.cumsum(pop / pop.sum())
        self.item_cdf[-1] = 1.0

        # Users.
        self.user_vec = rng.normal(0.0, m.user_scale, size=(n_users, m.dim))
        affinity = rng.normal(0.0, m.affinity_scale, size=(n_users, n_genres))
        fav_keys = np.log(genre_freq)[None, :] + rng.gumbel(size=(n_users, n_genres))
        favourites = np.argsort(-fav_keys, axis=1)[:, : m.favourite_genres]
        affinity[np.arange(n_users)[:, None], favourites] += m.favourite_boost
        self.user_affinity = affinity
        activity = np.exp(rng.normal(0.0, m.activity_sigma, size=n_users))
        self.user_activity = activity
        self.user_cdf = np.cumsum(activity / activity.sum())
        self.user_cdf[-1] = 1.0

        # Item attributes that do not enter the click model.
        self.release_year = rng.integers(1950, 2026, size=n_items)
        self.release_year_null = rng.random(n_items) < 0.05
        self.duration_min = np.round(np.clip(rng.normal(105.0, 20.0, size=n_items), 60.0, 200.0), 1)

    def item_genre_names(self) -> list[str]:
        return [
            "|".join(GENRES[g] for g in self.item_genre_idx[i, : self.item_n_genres[i]]) for i in range(self.n_items)
        ]


@dataclass(frozen=True)
class Churn:
    """How the catalogue and the users change over the days (see the module's docstring)."""

    new_items_per_day: int = 0
    new_users_per_day: int = 0
    item_lifetime_days: float | None = None  # None: an item stays on offer to the end
    launch_boost: float = 4.0
    launch_days: float = 2.0

    def __post_init__(self):
        if self.new_items_per_day < 0 or self.new_users_per_day < 0:
            raise ValueError("new items and users per day must be >= 0")
        if self.item_lifetime_days is not None and self.item_lifetime_days <= 0:
            raise ValueError(f"item_lifetime_days must be > 0, got {self.item_lifetime_days}")
        if self.launch_boost < 0 or self.launch_days <= 0:
            raise ValueError("launch_boost must be >= 0 and launch_days > 0")

    def totals(self, users: int, items: int, days: int) -> tuple[int, int]:
        """(users, items) there will be: the first day's and those that come on each later day."""
        later = max(0, int(days) - 1)
        return users + self.new_users_per_day * later, items + self.new_items_per_day * later


CHURN_STREAM = 0xC4A2  # release and arrival times: np.random.default_rng([seed, CHURN_STREAM])
DAY_SECONDS = 86400
NEVER = np.iinfo(np.int64).max


class Timeline:
    """When each item is released and retired, and when each user arrives (a world with churn)."""

    def __init__(self, churn: Churn, users: int, items: int, days: int, seed: int, start_ts: int = START_TS):
        rng = np.random.default_rng([seed, CHURN_STREAM])
        self.churn = churn
        lifetime = None if churn.item_lifetime_days is None else int(round(churn.item_lifetime_days * DAY_SECONDS))
        later_days = np.arange(1, max(1, int(days)))
        new_items = np.repeat(later_days, churn.new_items_per_day)
        first = np.full(items, start_ts, np.int64)
        if lifetime is not None:  # the first day's catalogue was released over the lifetime before the start
            first -= rng.integers(0, lifetime, size=items)
        self.item_release = np.concatenate(
            [first, start_ts + new_items * DAY_SECONDS + rng.integers(0, DAY_SECONDS, size=len(new_items))]
        )
        self.item_retire = (
            np.full(len(self.item_release), NEVER, np.int64) if lifetime is None else self.item_release + lifetime
        )
        new_users = np.repeat(later_days, churn.new_users_per_day)
        self.user_arrival = np.concatenate(
            [
                np.full(users, start_ts, np.int64),
                start_ts + new_users * DAY_SECONDS + rng.integers(0, DAY_SECONDS, size=len(new_users)),
            ]
        )
        steps = start_ts + np.arange(int(days) * 24) * STEP_SECONDS
        on_offer = [int(self.on_offer(t).sum()) for t in steps]
        if min(on_offer) < MAX_POSITION:
            raise ValueError(
                f"only {min(on_offer)} items are on offer at some hour, a slate needs {MAX_POSITION}: "
                "release more items per day or give them a longer lifetime"
            )

    def on_offer(self, t: int) -> np.ndarray:
        """The items that may be shown in the hour that starts at `t`: released by then, retired after it."""
        return (self.item_release <= t) & (t + STEP_SECONDS <= self.item_retire)

    def item_weights(self, pop: np.ndarray, t: int) -> np.ndarray:
        on_offer = self.on_offer(t)
        age_days = (t - self.item_release) / DAY_SECONDS
        lift = 1.0 + self.churn.launch_boost * np.exp(-np.maximum(age_days, 0.0) / self.churn.launch_days)
        return np.where(on_offer, pop * lift, 0.0)

    def user_weights(self, activity: np.ndarray, t: int) -> np.ndarray:
        return np.where(self.user_arrival <= t, activity, 0.0)


def cdf_of(weights: np.ndarray) -> np.ndarray:
    """The cumulative distribution of `weights`, exactly 1.0 from the last positive weight on: a uniform draw
    in [0, 1) with searchsorted(side="right") never picks an index of weight zero."""
    cdf = np.cumsum(weights)
    cdf /= cdf[-1]
    cdf[int(np.flatnonzero(weights > 0)[-1]) :] = 1.0
    return cdf


VECTOR_STREAM = 0x7EC7  # the item vectors' random stream: np.random.default_rng([seed, VECTOR_STREAM])


def item_vectors(world: World, dim: int, noise: float, seed: int) -> tuple[np.ndarray, float]:
    """(x [n_items, dim] float32, R^2 of the least-squares reconstruction of the latent factors from x)."""
    if dim < 1 or noise < 0:
        raise ValueError(f"item vectors need dim >= 1 and noise >= 0, got {dim}, {noise}")
    rng = np.random.default_rng([seed, VECTOR_STREAM])
    projection = rng.normal(0.0, 1.0 / np.sqrt(world.model.dim), size=(dim, world.model.dim))
    signal = world.item_vec @ projection.T
    x = (signal + rng.normal(0.0, noise * signal.std(), size=signal.shape)).astype(np.float32)
    design = np.hstack([x.astype(np.float64), np.ones((len(x), 1))])
    coef, *_ = np.linalg.lstsq(design, world.item_vec, rcond=None)
    residual = world.item_vec - design @ coef
    r2 = 1.0 - residual.var(axis=0).sum() / world.item_vec.var(axis=0).sum()
    return x, float(r2)


def step_counts(n_impressions: int, n_steps: int, start_ts: int = START_TS) -> np.ndarray:
    """Impressions per hourly step: daily pattern (evening peak) and a weekend lift; sums exactly."""
    s = np.arange(n_steps)
    ts = start_ts + s * STEP_SECONDS
    hour = (ts // 3600) % 24
    weekday = ((ts // 86400) + 3) % 7  # 1970-01-01 was a Thursday; 0 = Monday
    w = (1.0 + 0.6 * np.cos(2 * np.pi * (hour - 20) / 24)) * np.where(weekday >= 5, 1.15, 1.0)
    exact = n_impressions * w / w.sum()
    counts = np.floor(exact).astype(np.int64)
    rest = n_impressions - counts.sum()
    if rest:
        counts[np.argsort(-(exact - counts), kind="stable")[:rest]] += 1
    return counts


@dataclass
class StepEvents:
    """One step's impressions (sorted by time) and the clicks drawn from them (plus orphans)."""

    imp_user: np.ndarray
    imp_item: np.ndarray
    imp_ts: np.ndarray
    imp_position: np.ndarray
    imp_p_click: np.ndarray
    click_user: np.ndarray
    click_item: np.ndarray
    click_ts: np.ndarray
    click_imp: np.ndarray  # index of the impression within this step, -1 for orphans
    click_has_id: np.ndarray
    click_late: np.ndarray

    @property
    def n_impressions(self) -> int:
        return len(self.imp_user)


class Simulator:
    """Steps through time; state is the users' recent-click vectors and the not-yet-applied clicks."""

    def __init__(
        self,
        world: World,
        rng: np.random.Generator,
        days: int,
        n_impressions: int,
        start_ts: int = START_TS,
        timeline: Timeline | None = None,
    ):
        self.world, self.rng, self.m = world, rng, world.model
        self.timeline = timeline
        self.start_ts = start_ts
        self.n_steps = int(days) * 24
        self.counts = step_counts(n_impressions, self.n_steps, start_ts)
        self.recent = np.zeros((world.n_users, self.m.dim))
        self._pending = (np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int64))
        slate_p = self.m.slate_decay ** np.arange(MAX_POSITION)
        self.slate_p = slate_p / slate_p.sum()

    # -- recent-click state ---------------------------------------------------------------------
    def _apply_clicks_before(self, ts_limit: int) -> None:
        users, items, ts = self._pending
        due = ts < ts_limit
        if not due.any():
            return
        self._pending = (users[~due], items[~due], ts[~due])
        users, items, ts = users[due], items[due], ts[due]
        order = np.lexsort((ts, users))
        users, items = users[order], items[order]
        uniq, first, count = np.unique(users, return_index=True, return_counts=True)
        rank = np.arange(len(users)) - np.repeat(first, count)
        k = np.repeat(count, count)
        alpha = self.m.ema_alpha
        weight = alpha * (1 - alpha) ** (k - 1 - rank)
        self.recent[uniq] *= ((1 - alpha) ** count)[:, None]
        np.add.at(self.recent, users, weight[:, None] * self.world.item_vec[items])

    # -- one step -------------------------------------------------------------------------------
    def _slates(self, n: int) -> np.ndarray:
        rng = self.rng
        lengths = np.empty(0, np.int64)
        while lengths.sum() < n:
            more = rng.choice(MAX_POSITION, size=int(n / 4) + 8, p=self.slate_p) + 1
            lengths = np.concatenate([lengths, more])
        cum = np.cumsum(lengths)
        last = int(np.searchsorted(cum, n))
        lengths = lengths[: last + 1].copy()
        lengths[-1] -= cum[last] - n
        return lengths

    def _draw_items(self, n_slates: int, cdf: np.ndarray) -> np.ndarray:
        """n_slates x MAX_POSITION items by popularity, distinct within a row (redrawn on a repeat)."""
        rng = self.rng
        items = np.searchsorted(cdf, rng.random((n_slates, MAX_POSITION)), side="right")
        for _ in range(50):
            dup = np.zeros(items.shape, dtype=bool)
            for j in range(1, MAX_POSITION):
                dup[:, j] = (items[:, :j] == items[:, j : j + 1]).any(axis=1)
            n_dup = int(dup.sum())
            if n_dup == 0:
                break
            items[dup] = np.searchsorted(cdf, rng.random(n_dup), side="right")
        return np.minimum(items, self.world.n_items - 1)

    def step(self, s: int) -> StepEvents:
        w, m, rng = self.world, self.m, self.rng
        t0 = self.start_ts + s * STEP_SECONDS
        self._apply_clicks_before(t0)
        n = int(self.counts[s])
        lengths = self._slates(n) if n else np.empty(0, np.int64)
        n_slates = len(lengths)
        item_cdf, user_cdf, present = w.item_cdf, w.user_cdf, None
        if self.timeline is not None:
            item_w, user_w = self.timeline.item_weights(w.item_pop, t0), self.timeline.user_weights(w.user_activity, t0)
            item_cdf, user_cdf = cdf_of(item_w), cdf_of(user_w)
            present = (np.flatnonzero(user_w > 0), np.flatnonzero(item_w > 0))
        slate_user = np.minimum(np.searchsorted(user_cdf, rng.random(n_slates), side="right"), w.n_users - 1)
        slate_ts = t0 + rng.integers(0, STEP_SECONDS, size=n_slates)
        order = np.argsort(slate_ts, kind="stable")
        slate_user, slate_ts, lengths = slate_user[order], slate_ts[order], lengths[order]
        slate_items = self._draw_items(n_slates, item_cdf)
        shown = np.arange(MAX_POSITION)[None, :] < lengths[:, None]
        user = np.repeat(slate_user, lengths)
        ts = np.repeat(slate_ts, lengths).astype(np.int64)
        item = slate_items[shown]
        position = np.broadcast_to(np.arange(1, MAX_POSITION + 1), shown.shape)[shown]

        logit = (
            m.bias
            + w.item_quality[item]
            + np.einsum("nd,nd->n", w.user_vec[user], w.item_vec[item])
            + np.einsum("ng,ng->n", w.user_affinity[user], w.item_genre_w[item])
            + m.recency_coef * np.einsum("nd,nd->n", self.recent[user], w.item_vec[item])
            - m.position_coef * np.log(position)
        )
        p_click = sigmoid(logit)
        clicked = np.flatnonzero(rng.random(n) < p_click)

        k = len(clicked)
        late = rng.random(k) < m.late_fraction
        regular = np.clip(np.ceil(rng.exponential(m.delay_mean_s, size=k)), 1, m.delay_cap_s)
        late_delay = rng.integers(m.late_min_s, m.late_max_s + 1, size=k)
        delay = np.where(late, late_delay, regular).astype(np.int64)
        has_id = rng.random(k) < m.id_fraction
        n_orphans = int(rng.poisson(k * m.orphan_fraction / (1 - m.orphan_fraction))) if k else 0
        if self.timeline is None:
            orphan_user = rng.integers(0, w.n_users, size=n_orphans)
            orphan_item = rng.integers(0, w.n_items, size=n_orphans)
        else:  # only users already arrived and items on offer
            users, items = present
            orphan_user = users[rng.integers(0, len(users), size=n_orphans)]
            orphan_item = items[rng.integers(0, len(items), size=n_orphans)]
        orphan_ts = t0 + rng.integers(0, STEP_SECONDS, size=n_orphans)

        click_user = np.concatenate([user[clicked], orphan_user])
        click_item = np.concatenate([item[clicked], orphan_item])
        click_ts = np.concatenate([ts[clicked] + delay, orphan_ts]).astype(np.int64)
        click_imp = np.concatenate([clicked, np.full(n_orphans, -1)]).astype(np.int64)
        click_has_id = np.concatenate([has_id, np.zeros(n_orphans, dtype=bool)])
        click_late = np.concatenate([late, np.zeros(n_orphans, dtype=bool)])
        pu, pi, pt = self._pending
        self._pending = (
            np.concatenate([pu, click_user]),
            np.concatenate([pi, click_item]),
            np.concatenate([pt, click_ts]),
        )
        return StepEvents(
            user,
            item,
            ts,
            position.astype(np.int32),
            p_click,
            click_user,
            click_item,
            click_ts,
            click_imp,
            click_has_id,
            click_late,
        )
