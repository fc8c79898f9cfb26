"""storage: plain file access for every job, on local paths and on `scheme://` ones (hdfs://, s3://, ...).

    storage.makedirs(path); storage.write_text(posixpath.join(path, "report.json"), text)
    with storage.written_locally(path) as local: frame.to_parquet(local)  # writers that need a local file

Paths: `normalize` gives an absolute local path, or `scheme://authority/path` with a normalized path;
`file:` URIs are local. `relation` says how two paths overlap: local paths are compared after
resolving symlinks, `scheme://` URIs by scheme, authority and whole path components (`/data/raw2` is not
inside `/data/raw`).

File systems: a local path goes through `os` and `shutil`; any other through tf.io.gfile, with
tensorflow-io's file systems (s3://, hdfs://) registered by `gfile()`, the one place that imports
tensorflow-io. TensorFlow is imported only when a `scheme://` path is used, never at import time.

Object stores (s3://, through tensorflow-io): folders exist only as the prefixes of their files (an
empty one does not exist), a rename is a copy then a delete (`_move_objects`, `_SUCCESS` copied last),
and one object is written whole or not at all. Writers that need a local file (Parquet, HDF5) write one
and copy it (`written_locally`, `replace_file`); readers that need one get a temporary copy (`read_locally`).
"""

from __future__ import annotations

import errno
import logging
import os
import posixpath
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from typing import Iterator

# ---------------------------------------------------------------- paths


def normalize(path) -> str:
    """Absolute local path, or `scheme://authority/path` with a normalized path; `file:` URIs are local."""
    path = os.fspath(path)
    if path.startswith("file:"):
        path = path[len("file:") :]
        if path.startswith("//"):  # file:///x or file://host/x
            path = path[2:]
            path = path[path.find("/") :] if not path.startswith("/") and "/" in path else path
    if "://" not in path:
        return os.path.abspath(path)
    scheme, rest = path.split("://", 1)
    authority, _, rest = rest.partition("/")
    return f"{scheme.lower()}://{authority}{posixpath.normpath('/' + rest).rstrip('/')}"


def _is_local(path: str) -> bool:
    return "://" not in path


def is_local(path) -> bool:
    """True for a local path (or a file: URI), False for a `scheme://` one."""
    return _is_local(normalize(path))


def is_remote(path) -> bool:
    """A `scheme://` path other than file://, read through tf.io.gfile."""
    return "://" in str(path) and not str(path).startswith("file:")


def root_and_path(path: str) -> tuple[str, str]:
    """('', resolved local path) or ('scheme://authority', path) of a normalized path."""
    if _is_local(path):
        return "", os.path.realpath(path)
    scheme, rest = path.split("://", 1)
    authority, _, rest = rest.partition("/")
    return f"{scheme}://{authority}", "/" + rest


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def relation(output, input) -> str | None:
    """How `output` overlaps `input`: 'is', 'lies inside', 'contains', or None when they are apart."""
    (out_root, out), (in_root, inp) = root_and_path(normalize(output)), root_and_path(normalize(input))
    if out_root != in_root:
        return None
    if out == inp:
        return "is"
    if _inside(out, inp):
        return "lies inside"
    if _inside(inp, out):
        return "contains"
    return None


# ---------------------------------------------------------------- tensorflow-io's file systems


def gfile(path=None):
    """tf.io.gfile; for a remote `path` (or none given) with tensorflow-io's file systems (s3://, hdfs://)
    registered."""
    import tensorflow as tf

    if path is None or is_remote(path):
        try:
            import tensorflow_io  # noqa: F401 - registers its file systems with tf.io.gfile
        except ImportError:  # it is in requirements.txt; without it only TensorFlow's own schemes work
            logging.getLogger(__name__).warning(
                "tensorflow-io is not installed: s3:// and hdfs:// paths cannot be read or written"
            )
    return tf.io.gfile


# ---------------------------------------------------------------- file systems


class _LocalFs:
    local = True
    exists = staticmethod(os.path.lexists)
    isdir = staticmethod(os.path.isdir)
    listdir = staticmethod(os.listdir)
    rename = staticmethod(os.rename)
    mkdir = staticmethod(os.mkdir)

    @staticmethod
    def makedirs(path: str) -> None:
        os.makedirs(path, exist_ok=True)

    @staticmethod
    def remove(path: str) -> None:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.remove(path)

    @staticmethod
    def read_text(path: str) -> str:
        with open(path) as fh:
            return fh.read()

    @staticmethod
    def write_text(path: str, text: str) -> None:
        with open(path, "w") as fh:
            fh.write(text)


class _GFileFs:
    """hdfs://, s3://, gs://, ... through tf.io.gfile (TensorFlow is imported only when needed)."""

    local = False

    def __init__(self):
        self.gfile = gfile()

    @staticmethod
    def _folder(path: str) -> str:
        """`s3://bucket` as `s3://bucket/`: tensorflow-io's S3 names a bucket's root only with the slash."""
        return path + "/" if path.count("/") == 2 else path

    def exists(self, path: str) -> bool:
        return self.gfile.exists(self._folder(path))

    def isdir(self, path: str) -> bool:
        return self.gfile.isdir(self._folder(path))

    def listdir(self, path: str) -> list[str]:
        # object stores mark folders with '/'
        return [name.rstrip("/") for name in self.gfile.listdir(self._folder(path))]

    def rename(self, src: str, dst: str) -> None:
        if not on_object_store(src):
            self.gfile.rename(src, dst, overwrite=False)
            return
        if self.exists(dst):
            raise FileExistsError(dst)
        _move_objects(self.gfile, src, dst)

    def mkdir(self, path: str) -> None:
        if self.exists(path):
            raise FileExistsError(path)
        self.gfile.mkdir(self._folder(path))  # on an object store a no-op: the folder appears with its first file

    def makedirs(self, path: str) -> None:
        self.gfile.makedirs(self._folder(path))

    def remove(self, path: str) -> None:
        if self.gfile.isdir(path):
            self.gfile.rmtree(path)
        else:
            self.gfile.remove(path)

    def read_text(self, path: str) -> str:
        with self.gfile.GFile(path, "r") as fh:
            return fh.read()

    def write_text(self, path: str, text: str) -> None:
        with self.gfile.GFile(path, "w") as fh:
            fh.write(text)


# Object stores: a rename is a copy, done object by object (_move_objects).
OBJECT_STORE_SCHEMES = ("s3://",)
# Copied last when a folder moves on an object store, so that a reader who waits for them finds the rest.
LAST_COPIED = ("_SUCCESS",)
_COPY_THREADS = 8


def on_object_store(path: str) -> bool:
    """True for a path on an object store (s3://), where a rename is a copy."""
    return path.startswith(OBJECT_STORE_SCHEMES)


def _move_objects(gfile, src: str, dst: str) -> None:
    """Move the file or folder `src` to `dst` on an object store: copy every object (server-side, a
    few at a time; the LAST_COPIED markers after the rest), then delete the sources. When a copy
    fails, the copies made so far are deleted: `src` stays whole and `dst` absent (`dst` must not exist).

    Not tf.io.gfile.rename: tensorflow-io 0.37.1 moves every key that merely starts with `src`'s key (a
    rename of `runs/r1` takes `runs/r10/...` along), and cannot copy an empty object (`_SUCCESS`)."""
    from concurrent.futures import ThreadPoolExecutor

    if gfile.isdir(src):
        root = src.rstrip("/")
        sources = [posixpath.join(folder, name) for folder, _, names in gfile.walk(root) for name in names]
        pairs = [(path, posixpath.join(dst, path[len(root) + 1 :])) for path in sources]
    else:
        pairs = [(src, dst)]
    first = [p for p in pairs if posixpath.basename(p[0]) not in LAST_COPIED]
    last = [p for p in pairs if posixpath.basename(p[0]) in LAST_COPIED]
    with ThreadPoolExecutor(_COPY_THREADS) as pool:
        try:
            for batch in (first, last):
                list(pool.map(lambda pair: _copy_object(gfile, *pair), batch))
        except BaseException:  # a move that fails leaves `src` whole and nothing at `dst`
            list(pool.map(lambda target: gfile.exists(target) and gfile.remove(target), [t for _, t in pairs]))
            raise
        list(pool.map(gfile.remove, [source for source, _ in pairs]))


def _copy_object(gfile, src: str, dst: str) -> None:
    if gfile.stat(src).length == 0:  # tensorflow-io's S3 copy refuses an empty object
        with gfile.GFile(dst, "w") as fh:
            fh.write("")  # a GFile that is never written to creates nothing
    else:
        gfile.copy(src, dst, overwrite=True)


_LOCAL = _LocalFs()
_gfile_fs: _GFileFs | None = None


def file_system(path: str):
    """The file system of the normalized `path`: local (`.local` True: os, locks, renameat2) or
    tf.io.gfile's. Both offer exists, isdir, listdir, rename, mkdir, makedirs, remove, read_text, write_text."""
    global _gfile_fs
    if _is_local(path):
        return _LOCAL
    if _gfile_fs is None:
        _gfile_fs = _GFileFs()
    return _gfile_fs


# ---------------------------------------------------------------- plain file access


def register_file_system(path) -> None:
    """Make `path` readable by tf.io.gfile and tf.data (a `scheme://` path needs tensorflow-io's plugins)."""
    file_system(normalize(path))


def exists(path) -> bool:
    path = normalize(path)
    return file_system(path).exists(path)


def isdir(path) -> bool:
    path = normalize(path)
    return file_system(path).isdir(path)


def listdir(path) -> list[str]:
    """The names in a folder, on any file system."""
    path = normalize(path)
    return file_system(path).listdir(path)


def read_text(path) -> str:
    path = normalize(path)
    return file_system(path).read_text(path)


def write_text(path, text: str) -> None:
    """Write a small file (a marker) on any file system."""
    path = normalize(path)
    file_system(path).write_text(path, text)


def remove(path) -> None:
    """Delete a file or a folder tree on any file system."""
    path = normalize(path)
    file_system(path).remove(path)


def makedirs(path) -> None:
    """Create a folder and its parents on any file system."""
    path = normalize(path)
    file_system(path).makedirs(path)


def copy_tree(src, dst) -> list[str]:
    """Copy the files under the folder `src` to `dst` (any file systems, e.g. a local folder to s3://);
    return the destination paths. Never overwrites: `dst` is meant to be inside a fresh staging."""
    src, dst = normalize(src), normalize(dst)
    fs = gfile()
    copied = []
    for folder, _, files in fs.walk(src):
        relative = folder.rstrip("/")[len(src) :].lstrip("/")
        target = posixpath.join(dst, relative) if relative else dst
        fs.makedirs(target)
        for name in sorted(files):
            fs.copy(posixpath.join(folder, name), posixpath.join(target, name), overwrite=False)
            copied.append(posixpath.join(target, name))
    return copied


@contextmanager
def written_locally(path) -> Iterator[str]:
    """A local file name to write `path`'s content to, for writers that need one (Parquet, HDF5):
    `path` itself when it is local; otherwise a temporary file, copied to `path` when the block ends
    without an error (an object store then gets the object whole) and removed in any case."""
    if is_local(path):
        yield str(path)
        return
    target = normalize(path)
    with tempfile.TemporaryDirectory(prefix="ctr-upload-") as folder:
        local = os.path.join(folder, posixpath.basename(target))
        yield local
        gfile().copy(local, target, overwrite=True)


@contextmanager
def read_locally(path) -> Iterator[str]:
    """A local file with `path`'s content, for readers that need one (HDF5): `path` itself when it is
    local, otherwise a temporary copy, removed when the block ends."""
    if is_local(path):
        yield str(path)
        return
    source = normalize(path)
    with tempfile.TemporaryDirectory(prefix="ctr-download-") as folder:
        local = os.path.join(folder, posixpath.basename(source))
        gfile().copy(source, local, overwrite=True)
        yield local


def ensure_space(directory: str, nbytes: int) -> None:
    """Raise OSError(ENOSPC) unless the local `directory` has `nbytes` free: for writers that must not
    run out of space halfway (HDF5 then keeps a broken handle that crashes the process at exit). For a
    `scheme://` folder the local temporary folder is checked, where its files are written first."""
    if not is_local(directory):
        directory = tempfile.gettempdir()
    stat = os.statvfs(directory)
    free = stat.f_bavail * stat.f_frsize
    if free < nbytes:
        raise OSError(errno.ENOSPC, f"No space left on device ({free} bytes free, {nbytes} needed)", directory)


def replace_file(path: str, write) -> None:
    """Replace the file `path` in one rename: `write(tmp)` writes the new content to a hidden
    sibling (its name ends like `path`'s, e.g. `.weights.h5`), so readers see the old file or the new one.

    On a `scheme://` path `write` gets a local temporary file, which is copied to the hidden sibling
    and renamed over `path` (on an object store a server-side copy, which replaces the object whole)."""
    if not is_local(path):
        _replace_remote_file(normalize(path), write)
        return
    directory, name = os.path.split(path)
    tmp = os.path.join(directory, f".tmp-{uuid.uuid4().hex[:8]}-{name}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.remove(tmp)
        raise


def _replace_remote_file(path: str, write) -> None:
    fs = gfile()
    directory, name = posixpath.split(path)
    hidden = posixpath.join(directory, f".tmp-{uuid.uuid4().hex[:8]}-{name}")
    with written_locally(hidden) as local:
        write(local)
    try:
        if on_object_store(path):
            _copy_object(fs, hidden, path)  # a server-side copy replaces the object whole
            fs.remove(hidden)
        else:
            fs.rename(hidden, path, overwrite=True)
    except BaseException:
        if fs.exists(hidden):
            fs.remove(hidden)
        raise
