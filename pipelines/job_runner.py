"""job_runner: how a job's process ends, for every job in `jobs/`.

    if __name__ == "__main__":
        run_job(main)  # sys.exit(main()), except that a process that used s3:// ends with os._exit

tensorflow-io 0.37.1 aborts the interpreter at exit once it has used s3:// (exit code 134,
tensorflow/io#2039): `run_job` ends such a process with the job's real code. `print_outputs` writes a
job's last line, where its outputs are.
"""

from __future__ import annotations

import atexit
import os
import sys
import traceback
from typing import Callable, NoReturn, Sequence


def print_outputs(path, contents: str = "") -> None:
    """A job's last line, on stderr after whatever it printed on stdout (often JSON, which stays parseable):
    where its outputs are, e.g. `outputs: /data/runs/deepfm (metrics.parquet, ...)`."""
    sys.stdout.flush()
    print(f"outputs: {path}{f' ({contents})' if contents else ''}", file=sys.stderr, flush=True)


# Schemes whose tensorflow-io client aborts the interpreter at exit ("pure virtual method called", exit
# code 134, tensorflow/io#2039, not fixed in 0.37.1) once it has been used.
HARD_EXIT_SCHEMES = ("s3://",)


def run_job(main: Callable[[list], int], argv: Sequence[str] | None = None) -> NoReturn:
    """Exit with the code of `main(argv)` (default: the command line).

    When an argument names an s3:// path the process ends with os._exit, after the atexit handlers
    (logging, Spark's gateway, temporary folders) and a flush of stdout and stderr: the outputs are
    published by then, and the interpreter's own exit would abort in tensorflow-io's S3 client and turn
    a finished job into exit code 134. An exception is printed as Python would and exits with 1."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not any(scheme in str(arg) for arg in argv for scheme in HARD_EXIT_SCHEMES):
        sys.exit(main(argv))
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse: --help, a usage error
        code = exc.code
    except KeyboardInterrupt:
        traceback.print_exc()
        code = 130
    except BaseException:
        traceback.print_exc()
        code = 1
    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    _exit_now(code)


def _exit_now(code: int) -> NoReturn:
    try:
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(code)
