"""Start and stop a one-machine Spark standalone cluster (a master and N workers) from the pinned pyspark.

    python -m jobs.spark_cluster up [--workers N] [--cores C] [--memory M] [--workdir DIR] [--port P] [--webui-port U]
    python -m jobs.spark_cluster down [--workdir DIR]

`up` waits until the master lists every worker as alive, then prints the master URL to give
spark-submit (spark://127.0.0.1:P) and the master's web UI. Logs, pid files and the workers' application
folders go under DIR (default data/cluster). `up` refuses (exit code 2) while DIR records a running
cluster, or when a port is taken; a failed start stops what it started and names the log to read (exit 1).
`down` stops only the processes `up` recorded in DIR, by pid, after checking each is still that process.
See docs/cluster.md.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys

from pipelines.samples import standalone


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _memory(text: str) -> str:
    if not re.fullmatch(r"\d+[mMgGtT]", text):
        raise argparse.ArgumentTypeError(f"expected a size such as 512m or 2g, got {text!r}")
    return text


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("up", help="start a master and N workers, wait until they are registered")
    start.add_argument("--workers", type=_positive_int, default=1, help="worker processes (default 1)")
    start.add_argument("--cores", type=_positive_int, default=1, help="cores each worker offers (default 1)")
    start.add_argument("--memory", type=_memory, default="1g", help="memory each worker offers (default 1g)")
    start.add_argument("--port", type=int, default=7077, help="master port (default 7077)")
    start.add_argument("--webui-port", type=int, default=8080, help="master web UI port (default 8080)")
    start.add_argument("--timeout", type=float, default=120, help="seconds to wait for the workers (default 120)")
    stop = commands.add_parser("down", help="stop the processes `up` started, by their recorded pids")
    stop.add_argument("--timeout", type=float, default=30, help="seconds between SIGTERM and SIGKILL (default 30)")
    for sub in (start, stop):
        sub.add_argument(
            "--workdir", default=standalone.DEFAULT_WORKDIR, help="logs and pid files (default %(default)s)"
        )
    return parser.parse_args(argv)


def _up(args: argparse.Namespace) -> None:
    info = standalone.up(args.workdir, args.workers, args.cores, args.memory, args.port, args.webui_port, args.timeout)
    print(f"master   {info['master_url']}")
    print(f"web UI   {info['ui_url']}")
    print(f"workers  {args.workers} (each: cores {args.cores}, memory {args.memory})")
    print(f"logs     {info['workdir']}/logs")
    print(f"stop     python -m jobs.spark_cluster down --workdir {args.workdir}")


def _down(args: argparse.Namespace) -> None:
    lines = standalone.down(args.workdir, args.timeout)
    for line in lines or [f"no cluster recorded under {args.workdir}"]:
        print(line)


def main(argv=None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    args = parse_args(argv)
    try:
        if args.command == "up":
            _up(args)
        else:
            _down(args)
    except standalone.ClusterRefused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except standalone.ClusterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
