"""pipelines/storage.py: paths, and plain file access on local files (the `scheme://` side runs against a
local S3 emulator in tests/test_s3.py, and on local files through tf.io.gfile in tests/test_publish.py)."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines import storage
from pipelines.storage import relation

ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- paths


def test_relation_compares_whole_path_components(tmp_path):
    assert relation(tmp_path / "raw", f"{tmp_path}/./raw/") == "is"
    assert relation(tmp_path / "raw" / "samples", tmp_path / "raw") == "lies inside"
    assert relation(tmp_path, tmp_path / "raw") == "contains"
    assert relation(tmp_path / "raw2", tmp_path / "raw") is None
    assert relation(f"file://{tmp_path}/raw", tmp_path / "raw") == "is"
    assert relation("hdfs://nn/data/raw/samples", "hdfs://nn/data/./raw/") == "lies inside"
    assert relation("hdfs://nn/data/raw2", "hdfs://nn/data/raw") is None
    assert relation("hdfs://other/data/raw", "hdfs://nn/data/raw") is None
    assert relation("s3://bucket/raw", "/raw") is None


def test_normalize_makes_local_paths_absolute_and_file_uris_local(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert storage.normalize("raw/./a/") == f"{tmp_path}/raw/a"
    assert storage.normalize("file:///data/raw") == "/data/raw"
    assert storage.normalize("file://host/data/raw") == "/data/raw"
    assert storage.normalize("HDFS://nn/data/./raw/") == "hdfs://nn/data/raw"
    assert storage.normalize("s3://bucket") == "s3://bucket"
    assert storage.root_and_path("s3://bucket/a/b") == ("s3://bucket", "/a/b")
    assert storage.is_local("file:///data") and storage.is_local(tmp_path) and not storage.is_local("s3://b/x")
    assert storage.is_remote("hdfs://nn/x") and not storage.is_remote("file:///x") and not storage.is_remote("/x")
    assert storage.on_object_store("s3://b/x") and not storage.on_object_store("hdfs://nn/x")


def test_importing_storage_publish_and_the_job_runner_loads_neither_stack():
    code = "import sys, pipelines.storage, pipelines.publish, pipelines.job_runner\n"
    code += "print(sorted(m for m in ('tensorflow', 'tensorflow_io', 'pyspark') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


# ---------------------------------------------------------------- local files


def test_plain_file_access_on_local_files(tmp_path):
    folder = tmp_path / "a" / "b"
    storage.makedirs(folder)
    storage.makedirs(folder)  # an existing folder is fine
    storage.write_text(folder / "x.txt", "hello")
    assert storage.read_text(folder / "x.txt") == "hello"
    assert storage.isdir(folder) and not storage.isdir(folder / "x.txt")
    assert storage.listdir(tmp_path / "a") == ["b"]
    storage.remove(folder / "x.txt")
    assert not storage.exists(folder / "x.txt") and storage.exists(folder)
    storage.remove(tmp_path / "a")  # a whole tree
    assert not storage.exists(tmp_path / "a")


def test_replace_file_swaps_in_the_new_content_and_leaves_the_old_one_when_writing_fails(tmp_path):
    path = tmp_path / "state.json"
    storage.replace_file(str(path), lambda tmp: Path(tmp).write_text("one"))
    assert path.read_text() == "one"

    def fail(tmp):
        assert Path(tmp).name.endswith("-state.json") and Path(tmp).name.startswith(".tmp-")
        Path(tmp).write_text("half")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        storage.replace_file(str(path), fail)
    assert path.read_text() == "one" and os.listdir(tmp_path) == ["state.json"]


def test_local_paths_are_written_and_read_in_place(tmp_path):
    path = tmp_path / "table.parquet"
    with storage.written_locally(path) as local:
        assert local == str(path)
        Path(local).write_text("x")
    with storage.read_locally(path) as local:
        assert local == str(path)


def test_ensure_space_refuses_more_than_the_disk_holds(tmp_path):
    storage.ensure_space(str(tmp_path), 1)
    with pytest.raises(OSError) as raised:
        storage.ensure_space(str(tmp_path), 1 << 62)
    assert raised.value.errno == errno.ENOSPC


def test_copy_tree_copies_every_file_and_never_overwrites(tmp_path):
    src = tmp_path / "src"
    (src / "vocab" / "item_id").mkdir(parents=True)
    (src / "report.json").write_text("{}")
    (src / "vocab" / "item_id" / "part-0.parquet").write_text("p")
    copied = storage.copy_tree(src, tmp_path / "dst")
    assert sorted(copied) == [f"{tmp_path}/dst/report.json", f"{tmp_path}/dst/vocab/item_id/part-0.parquet"]
    assert (tmp_path / "dst" / "vocab" / "item_id" / "part-0.parquet").read_text() == "p"
    with pytest.raises(Exception, match="exists"):
        storage.copy_tree(src, tmp_path / "dst")
