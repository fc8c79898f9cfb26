"""Train a CTR model on a SAMPLES directory written by jobs/build_samples.py.

    python -m jobs.train --samples SAMPLES --model NAME --output RUN [--epochs N] [--init-from RUN0]
                         [--conf FILE] [--set key=value ...]
    python jobs/train.py --samples SAMPLES --model deepfm --output runs/deepfm

SAMPLES is an ordinary build (train/, valid/, test/), or with --set data.train_dates=FIRST..LAST
--set data.valid_dates=... --set data.test_dates=... (each a range or one day YYYY-MM-DD) a date-partitioned
one (SAMPLES/date=YYYY-MM-DD/): the run reads those days; a missing or incomplete day is refused (exit code 2),
days of different spec hashes too (exit code 3). A feature_spec.json that is not a valid spec, of SAMPLES or of a
selected day (a complete day's missing one too), is refused naming its path (exit code 3); SAMPLES with
neither feature_spec.json nor day folders too (exit code 2). Folders such as date=2026-02-30 are no days.
Writes RUN/metrics.parquet, predictions/, embeddings/, model/ (SavedModel), plots/ (PNG), run.json,
tensorboard/ and checkpoints/; the last line (stderr) says where. Rerunning into the same RUN resumes from its last
checkpoint; samples with another feature spec hash than RUN was trained on are refused
(exit code 3). A RUN that overlaps SAMPLES, or that is not empty and holds no earlier run,
is refused (exit code 2).
--init-from RUN0 starts a new RUN from the weights and optimizer state of the finished run RUN0 (those of
its best epoch, which its outputs were made from). Refused before RUN is touched: RUN0 on samples of another
spec hash, another model or other params (exit code 3); RUN0 not a finished run, one whose weights file or
checkpoints/state.json cannot be read (named), or a RUN that already holds a run, which a rerun without
--init-from resumes (exit code 2).
Defaults: conf/train.yaml; model parameters: declared with their defaults as Params in models/<name>.py
(the shared ones: models/params.py ModelParams), listed below, each model's with its descriptions by
--help --model NAME; the yaml holds only overrides. A parameter the model does not read is refused.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import textwrap

if not __package__:  # run as a script: python jobs/train.py
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from models import (  # noqa: E402
    MODEL_NAMES,
    ModelParams,
    ParamError,
    model_defaults,
    model_params_described,
    resolve_params,
)
from pipelines.config import ConfigError, load_job_config, print_config_error  # noqa: E402


def _value(value) -> str:
    return json.dumps(value, separators=(",", ":"))


def _params_help() -> str:
    """The model parameters (default), the shared ones once, then each model's own."""
    shared = ModelParams().model_dump()

    def entry(who: str, params: dict) -> str:
        listed = ", ".join(f"{k}={_value(v)}" for k, v in params.items())
        return textwrap.fill(listed or "-", 100, initial_indent=f"  {who}: ", subsequent_indent="    ")

    lines = ["model parameters (--set params.NAME=VALUE), with their defaults:", entry("every model", shared)]
    for name in MODEL_NAMES:
        own = {k: v for k, v in model_defaults(name).items() if k not in shared or v != shared[k]}
        lines.append(entry(name, own))
    lines.append("a model's parameters with their descriptions: --help --model NAME")
    return "\n".join(lines)


def _model_params_help(name: str) -> str:
    """Every parameter ``name`` reads, with its default and description (its declaration's)."""
    described = [(f"{key}={_value(default)}", text) for key, default, text in model_params_described(name)]
    width = max(len(setting) for setting, _ in described)
    lines = [f"parameters of {name} (--set params.NAME=VALUE), with their defaults:"]
    lines += [f"  {setting:<{width}}  {text}" for setting, text in described]
    return "\n".join(lines)


def _chosen_model(argv) -> str | None:
    """The model --model names in ``argv``, when it is one (for --help), else None."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--model")
    name = pre.parse_known_args(sys.argv[1:] if argv is None else argv)[0].model
    return name if name in MODEL_NAMES else None


def parse_args(argv=None) -> argparse.Namespace:
    """The job's flags; ``--help`` lists every model's parameters, ``--help --model NAME`` NAME's with their
    descriptions."""
    model = _chosen_model(argv)
    parser = argparse.ArgumentParser(
        description=__doc__,
        epilog=_model_params_help(model) if model else _params_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--samples",
        required=True,
        help="samples directory (feature_spec.json, train/, valid/, test/, vocab/; or date=YYYY-MM-DD/ folders "
        "with data.*_dates)",
    )
    parser.add_argument(
        "--model", choices=MODEL_NAMES, metavar="NAME", help=f"{' | '.join(MODEL_NAMES)} (default: config `model`)"
    )
    parser.add_argument("--output", required=True, help="run directory (created; an existing one is resumed)")
    parser.add_argument("--epochs", type=int, help="total number of epochs (default: config `epochs`)")
    parser.add_argument(
        "--init-from",
        metavar="RUN0",
        help="warm-start a new run from this finished run's weights and optimizer state (default: config `init_from`)",
    )
    parser.add_argument("--conf", help="YAML file merged over conf/train.yaml")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config key, e.g. --set params.embedding_dim=32 (repeatable)",
    )
    return parser.parse_args(argv)


def load_train_config(args: argparse.Namespace):
    """conf/train.yaml, --conf, --set, then --model, --epochs and --init-from (which win), validated; the model params
    checked by models.resolve_params (a parameter the model does not read is refused). ConfigError
    before any work."""
    flags = [f"model={args.model}"] if args.model else []
    flags += [f"epochs={args.epochs}"] if args.epochs is not None else []
    # quoted: a path such as 2026-01-01 or 123 stays a string
    flags += [f"init_from={json.dumps(args.init_from)}"] if args.init_from is not None else []
    config = load_job_config("train", args.conf, [*args.overrides, *flags], model_names=MODEL_NAMES)
    from pipelines.training.train import model_params

    try:
        resolve_params(config.model, model_params(config))
    except ParamError as exc:  # each line names its params.<key>
        raise ConfigError(str(exc)) from None
    return config


def main(argv=None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    args = parse_args(argv)
    try:
        config = load_train_config(args)
    except ConfigError as exc:
        print_config_error(exc)
        return 2

    from feature_spec import SpecError
    from pipelines.publish import OutputRefused, write_failure
    from pipelines.training.dataset import CorruptShardError, SamplesRefused
    from pipelines.training.train import InitFromRefused, RunMismatch, SimulatedCrash, train

    try:
        summary = train(args.samples, args.output, config)
    except ConfigError as exc:  # train() validates its config on entry too (checked above already)
        print_config_error(exc)
        return 2
    # RUN overlaps SAMPLES, ...; a truncated shard; a selected day missing or incomplete; no SAMPLES; a bad RUN0
    except (OutputRefused, CorruptShardError, InitFromRefused, SamplesRefused) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # spec hash mismatch, another model in RUN or --init-from, a broken feature_spec.json (of SAMPLES or a day)
    except (SpecError, RunMismatch) as exc:
        logging.getLogger("jobs.train").error("%s", exc)
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except SimulatedCrash as exc:  # debug.crash_after_epoch
        logging.getLogger("jobs.train").error("%s", exc)
        return 4
    except Exception as exc:  # a full disk while writing RUN
        unwritable = write_failure(exc, args.output)
        if unwritable is None:
            raise
        print(f"error: {unwritable}", file=sys.stderr)
        return 2
    from pipelines.job_runner import print_outputs

    if "task" in summary:  # a worker of a multi-worker run: the chief writes and prints the run's outputs
        print(json.dumps(summary, indent=2))
        print_outputs(summary["run_dir"], "written by the chief")
        return 0
    print(
        json.dumps(
            {
                "run_id": summary["run_id"],
                "model": summary["model"],
                "best_epoch": summary["best_epoch"],
                "test": {k: (round(v, 4) if v is not None else None) for k, v in summary["metrics"]["test"].items()},
                "valid": {k: (round(v, 4) if v is not None else None) for k, v in summary["metrics"]["valid"].items()},
                "outputs": summary["outputs"],
                "seconds": round(summary["timings"]["total"], 1),
                **({"init_from": summary["init_from"]} if "init_from" in summary else {}),
            },
            indent=2,
        )
    )
    print_outputs(summary["output"], ", ".join(_listed(summary["outputs"])))
    return 0


def _listed(outputs: dict) -> list[str]:
    """The names of run.json's `outputs`, folders with a slash."""
    return [name if "." in name else f"{name}/" for name in outputs]


if __name__ == "__main__":
    from pipelines.job_runner import run_job

    run_job(main)  # sys.exit(main()), except that a process that used s3:// ends with os._exit
