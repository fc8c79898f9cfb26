"""Generate the embedded synthetic raw data (impressions, clicks, items) as Parquet.

    python -m jobs.generate_synthetic --output RAW [--users N] [--items N] [--days N]
                                      [--impressions N] [--seed N] [--chunk-rows N]
                                      [--item-vector-dim N [--item-vector-noise X]]
                                      [--new-items-per-day N] [--new-users-per-day N]
                                      [--item-lifetime-days D] [--launch-boost X] [--launch-days D]

numpy + pyarrow, no Spark: `sources/synthetic.py` simulates the click model of
`sources/click_model.py` hour by hour and writes RAW chunk by chunk, atomically.
An existing RAW is replaced only when it is an earlier output of this generator
(it holds _generator.json) or empty; otherwise the job refuses (exit code 2).
The same arguments give byte-identical files. Each impression carries `p_click`,
the true probability its click was drawn with. `--item-vector-dim N` adds a dense
N-dimensional vector per item (RAW/items column `item_vec`: a noisy projection of the
item's latent factors; build samples with `--set items.vector_columns=[item_vec]`).

A churn world (any of --new-items-per-day, --new-users-per-day, --item-lifetime-days): items are released
and users arrive on every day after the first, items leave after their lifetime, and a new item gets a
launch lift that fades (`sources/click_model.py`, "Churn"). --users and --items are then the first day's;
RAW/items lists every item with `released_ts` and `retired_ts`. Without them the world does not change.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

if not __package__:  # run as a script: python jobs/generate_synthetic.py
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pipelines.job_runner import print_outputs  # noqa: E402
from pipelines.publish import OutputRefused  # noqa: E402
from sources.click_model import Churn  # noqa: E402
from sources.synthetic import DEFAULT_VECTOR_NOISE, DEFAULTS, MIN_ITEMS, generate  # noqa: E402

PRINTED = (
    "output",
    "impressions",
    "clicks",
    "click_rate",
    "mean_p_click",
    "late_clicks",
    "orphan_clicks",
    "items",
    "part_files",
    "item_vector_r2",
    "items_released_later",
    "users_arrived_later",
    "seconds",
)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True, help="raw data directory to (re)create")
    parser.add_argument("--users", type=_positive_int, default=DEFAULTS["users"])
    parser.add_argument("--items", type=_positive_int, default=DEFAULTS["items"], help=f"catalog size (>= {MIN_ITEMS})")
    parser.add_argument("--days", type=_positive_int, default=DEFAULTS["days"])
    parser.add_argument("--impressions", type=_positive_int, default=DEFAULTS["impressions"])
    parser.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    parser.add_argument(
        "--chunk-rows",
        type=_positive_int,
        default=None,
        help="impressions per part file (default: a tenth of --impressions, within 10k-250k)",
    )
    parser.add_argument(
        "--item-vector-dim",
        type=int,
        default=0,
        help="add a dense vector of this many dimensions per item (RAW/items column item_vec); 0: none",
    )
    parser.add_argument(
        "--item-vector-noise",
        type=float,
        default=DEFAULT_VECTOR_NOISE,
        help="noise of the item vectors, relative to their signal (default %(default)s)",
    )
    churn = parser.add_argument_group("churn (a catalogue and users that change over the days)")
    churn.add_argument("--new-items-per-day", type=int, default=0, help="items released on each later day")
    churn.add_argument("--new-users-per-day", type=int, default=0, help="users arriving on each later day")
    churn.add_argument("--item-lifetime-days", type=float, default=None, help="days an item stays on offer")
    churn.add_argument(
        "--launch-boost", type=float, default=Churn.launch_boost, help="a new item's exposure lift (%(default)s)"
    )
    churn.add_argument(
        "--launch-days", type=float, default=Churn.launch_days, help="how fast the lift fades (%(default)s days)"
    )
    return parser.parse_args(argv)


def churn_of(args: argparse.Namespace) -> Churn | None:
    """The churn the flags ask for, or None (ValueError on a bad value)."""
    if not (args.new_items_per_day or args.new_users_per_day or args.item_lifetime_days is not None):
        if (args.launch_boost, args.launch_days) != (Churn.launch_boost, Churn.launch_days):
            raise ValueError("--launch-boost and --launch-days shape a churn world: add --new-items-per-day")
        return None
    return Churn(
        args.new_items_per_day, args.new_users_per_day, args.item_lifetime_days, args.launch_boost, args.launch_days
    )


def main(argv=None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    args = parse_args(argv)
    if args.items < MIN_ITEMS:
        print(f"--items must be at least {MIN_ITEMS} (a slate shows up to {MIN_ITEMS} distinct items)", file=sys.stderr)
        return 2
    if args.item_vector_dim < 0 or args.item_vector_noise < 0:
        print("--item-vector-dim and --item-vector-noise must be >= 0", file=sys.stderr)
        return 2
    try:
        churn = churn_of(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        summary = generate(
            args.output,
            args.users,
            args.items,
            args.days,
            args.impressions,
            args.seed,
            args.chunk_rows,
            item_vector_dim=args.item_vector_dim,
            item_vector_noise=args.item_vector_noise,
            churn=churn,
        )
    except (OutputRefused, ValueError) as exc:  # RAW holds something else; too few items on offer
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({k: summary[k] for k in PRINTED if k in summary}, indent=2))
    print_outputs(summary["output"], "impressions/, clicks/, items/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
