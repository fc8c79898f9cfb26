"""pipelines/job_runner.py: a job's process ends with the job's own exit code, also after it used s3://
(where the interpreter's own exit would abort in tensorflow-io's S3 client), and its last line says where
its outputs are."""

import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.job_runner import print_outputs

ROOT = Path(__file__).resolve().parent.parent

RUN_JOB = """
import sys
from pipelines.job_runner import run_job

def main(argv):
    print("written", end="")  # must reach stdout although the process ends with os._exit
    outcome = argv[-1]
    if outcome == "raise":
        raise RuntimeError("boom")
    if outcome == "usage":
        sys.exit(2)
    return int(outcome)

run_job(main, sys.argv[1:])
"""


@pytest.mark.parametrize("path", ["s3://bucket/x", "/tmp/x"])
@pytest.mark.parametrize("outcome,code", [("0", 0), ("3", 3), ("raise", 1), ("usage", 2)])
def test_run_job_exits_with_the_job_s_own_code(path, outcome, code):
    result = subprocess.run(
        [sys.executable, "-c", RUN_JOB, "--output", path, outcome], cwd=ROOT, capture_output=True, text=True
    )
    assert (result.returncode, result.stdout) == (code, "written")
    assert ("RuntimeError: boom" in result.stderr) == (outcome == "raise")


def test_the_last_line_names_the_outputs_on_stderr(capsys):
    print_outputs("/data/runs/deepfm", "metrics.parquet, model/")
    print_outputs("/data/raw")
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "outputs: /data/runs/deepfm (metrics.parquet, model/)\noutputs: /data/raw\n"
