"""Generate the embedded synthetic raw data (impressions, clicks, items) as Parquet.

    python -m jobs.generate_synthetic --output RAW [--users N] [--items N] [--days N]
                                      [--impressions N] [--seed N] [--chunk-rows N]
                                      [--item-vector-dim N [--item-vector-noise X]]

numpy + pyarrow, no Spark: `sources/synthetic.py` simulates the click model of
`sources/click_model.py` hour by hour and writes RAW chunk by chunk, atomically.
An existing RAW is replaced only when it is an earlier output of this generator
(it holds _generator.json) or empty; otherwise the job refuses (exit code 2).
The same arguments give byte-identical files. Each impression carries `p_click`,
the true probability its click was drawn with. `--item-vector-dim N` adds a dense
N-dimensional vector per item (RAW/items column `item_vec`: a noisy projection of the
item's latent factors; build samples with `--set items.vector_columns=[item_vec]`).
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
    return parser.parse_args(argv)


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
        )
    except OutputRefused as exc:  # RAW holds something else than earlier generated data
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({k: summary[k] for k in PRINTED if k in summary}, indent=2))
    print_outputs(summary["output"], "impressions/, clicks/, items/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
