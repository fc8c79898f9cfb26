"""publish: how every job puts its output in place, and never destroys what it did not write.

    with StagedOutput(final, inputs=[raw_dir], markers=[("_SUCCESS", "feature_spec.json")]) as stage:
        ...write the whole output under stage.path...
    # normal exit: stage.path has replaced `final`; exception: only the job's own staging is removed

Readers open `final`: it is always absent or a complete output, never a half-written one. Plain file
access (paths, file systems, object-store copies) is pipelines/storage.py.

Refusals (`check_output`, raised as OutputRefused; the jobs exit with code 2):
- the output equals, contains or lies inside one of the job's inputs (`storage.relation`: local paths
  compared after resolving symlinks, `scheme://` URIs by scheme, authority and whole path components:
  `/data/raw2` is not inside `/data/raw`);
- the output exists, is not an empty directory, and holds none of the job's markers, the files that
  prove it is an earlier output of the same job (`markers` lists alternatives; a tuple needs all of its
  files). An existing empty directory is fine.

Staging: a hidden sibling `.<name>.staging-<id>/` of `final` holding `_STAGING.json` (pid, host,
start time) and `<name>/`, the output being written; on a local file system the run also holds an
`fcntl.flock` on `.<name>.staging-<id>.lock` beside it until it ends. The old output is moved into
the staging when it is replaced, so whatever a killed run leaves behind carries the marker.

Publishing (`swap_into_place`): on local Linux, `renameat2(RENAME_EXCHANGE)` swaps the new output and
the old one in a single system call, so `final` names a complete output at every moment; the old one,
now inside the staging, is then deleted. Without an old output it is one rename. On `scheme://` paths
(tf.io.gfile: hdfs://, s3://, ...) and where the kernel or file system lacks RENAME_EXCHANGE, the old
output is renamed into the staging and then the new one into place: for the time of that one rename
`final` does not exist (on an object store, where that rename is a copy, it holds part of the new output).
When the second rename fails, the old output is put back.

Stale stagings: a killed run leaves its staging behind. Each run first removes the stagings of the
same output that carry `_STAGING.json`, started before this run, and are not locked (local: their
lock can be taken without waiting) or, on `scheme://` paths where there are no locks, started more
than STALE_AFTER_SECONDS ago. A folder without the marker is never deleted, whatever its name.
On an object store (s3://) a rename is a copy (storage.py): a stale staging there that still holds an
earlier output (`*.previous`) is kept, with a warning: a killed copy may have left it the only whole one.
"""

from __future__ import annotations

import ctypes
import errno
import json
import logging
import os
import posixpath
import socket
import sys
import time
import uuid
from datetime import datetime, timezone
from typing import Iterable, Sequence

from pipelines import storage

log = logging.getLogger(__name__)

STAGING_MARKER = "_STAGING.json"
LOCK_SUFFIX = ".lock"
# Without locks (scheme:// paths) a staging counts as abandoned once its run started this long ago.
STALE_AFTER_SECONDS = 24 * 3600

Markers = Sequence["str | Sequence[str]"]


class OutputRefused(Exception):
    """Writing the output could destroy something this job did not write."""


class OutputUnwritable(OutputRefused):
    """The output cannot be written at all (read-only or missing permission, a file in the way)."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"cannot write {path}: {reason}")


# ---------------------------------------------------------------- refusals


def _describe(markers: Markers) -> str:
    return " or ".join("+".join([m] if isinstance(m, str) else m) for m in markers) or "marker"


def is_earlier_output(path: str, markers: Markers) -> bool:
    """True when `path` holds all the files of at least one entry of `markers`."""
    fs = storage.file_system(path)
    return any(
        all(fs.exists(posixpath.join(path, name)) for name in ([m] if isinstance(m, str) else m)) for m in markers
    )


def check_output(output, inputs: Iterable = (), markers: Markers = ()) -> str:
    """Return the normalized `output`, or raise OutputRefused when writing it could destroy what
    this job did not write: it overlaps an input, or it is non-empty and no earlier output of the job."""
    final = storage.normalize(output)
    if storage.root_and_path(final)[1].rstrip("/") == "":
        raise OutputRefused(f"output {final} is a file system root")
    for source in inputs:
        if source is None or str(source) == "":
            continue
        how = storage.relation(final, source)
        if how:
            raise OutputRefused(
                f"output {final} {how} the input {storage.normalize(source)}: "
                f"writing there would change the input; choose another output"
            )
    fs = storage.file_system(final)
    if fs.local:
        _check_writable(final)
    if fs.exists(final):
        if not fs.isdir(final):
            raise OutputRefused(f"output {final} exists and is not a directory; choose another output")
        if fs.listdir(final) and not is_earlier_output(final, markers):
            raise OutputRefused(
                f"output {final} is not empty and has no {_describe(markers)}, so it is not "
                f"an earlier output of this job; choose another output, or empty it first"
            )
    return final


# Write failures that the user fixes outside the job (space, quota, a read-only mount).
_WRITE_ERRNOS = {
    errno.ENOSPC: "No space left on device",
    errno.EDQUOT: "Disk quota exceeded",
    errno.EROFS: "Read-only file system",
}


def write_failure(exc: BaseException, output) -> OutputUnwritable | None:
    """`exc` as OutputUnwritable(output) when it says the disk is full, over quota or read-only, else None.

    Python raises OSError with an errno; Spark's writers (the JVM, or the Python workers writing shards)
    raise an error whose text carries the system's message."""
    if isinstance(exc, OSError) and exc.errno in _WRITE_ERRNOS:
        return OutputUnwritable(storage.normalize(output), _WRITE_ERRNOS[exc.errno])
    text = str(exc)
    for message in _WRITE_ERRNOS.values():
        if message in text:
            return OutputUnwritable(storage.normalize(output), message)
    return None


def check_writable(path) -> None:
    """Raise OutputUnwritable unless the local `path` can be created (its nearest existing ancestor is a
    writable folder); nothing is checked for `scheme://` paths."""
    path = storage.normalize(path)
    if storage.is_local(path):
        _check_writable(path)


def _check_writable(final: str) -> None:
    """Raise OutputUnwritable unless the job can create its staging beside `final` (local paths):
    the nearest existing ancestor of `final`'s parent must be a writable directory."""
    parent = os.path.dirname(final)
    while not os.path.lexists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise OutputUnwritable(final, f"{parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        reason = "read-only file system" if _read_only(parent) else "permission denied"
        raise OutputUnwritable(final, f"{parent} is not writable ({reason})")


def _read_only(path: str) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


# ---------------------------------------------------------------- publishing


def _load_renameat2():
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2  # glibc >= 2.28
    except (OSError, AttributeError):
        return None
    fn.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint)
    fn.restype = ctypes.c_int
    return fn


_RENAMEAT2 = _load_renameat2()
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def exchange(a: str, b: str) -> bool:
    """Swap the local paths `a` and `b` in one system call; False where that is unsupported."""
    if _RENAMEAT2 is None:
        return False
    if _RENAMEAT2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # old kernel, or a file system without it
        return False
    raise OSError(err, os.strerror(err), a, None, b)


def swap_into_place(new: str, final: str) -> None:
    """Put `new` (file or folder) at `final`, then delete the earlier `final`.

    `new` must lie inside a staging folder: the old output passes through there, so a run killed
    in between leaves it where stale-staging cleanup finds it."""
    fs = storage.file_system(final)
    if not fs.exists(final):
        fs.rename(new, final)
        return
    old = new
    if not (fs.local and exchange(new, final)):
        old = f"{new}.previous"
        fs.rename(final, old)
        try:
            fs.rename(new, final)  # between these two renames `final` does not exist
        except BaseException:
            fs.rename(old, final)  # a failed move leaves nothing at its destination: put the old output back
            raise
    fs.remove(old)


# ---------------------------------------------------------------- staging


def _lock(path: str, wait: bool) -> int | None:
    """An fd holding an exclusive flock on the file at `path` (created if absent); None if another holds it."""
    import fcntl

    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            st = os.stat(path)
            held = os.fstat(fd)
            if (st.st_dev, st.st_ino) == (held.st_dev, held.st_ino):
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # a cleanup unlinked the file between open and flock: lock the current one


def _unlock(path: str, fd: int) -> None:
    try:
        os.remove(path)  # while still locked, so nobody locks a file that is about to go
    except FileNotFoundError:
        pass
    os.close(fd)


def _read_marker(fs, staging: str) -> dict | None:
    try:
        marker = json.loads(fs.read_text(posixpath.join(staging, STAGING_MARKER)))
        return marker if isinstance(marker.get("started"), (int, float)) else None
    except Exception:  # absent, unreadable, or not ours
        return None


def _remove_staging(fs, staging: str) -> None:
    """Delete a staging folder, its marker last, so that an interrupted delete can be resumed later."""
    for name in fs.listdir(staging):
        if name != STAGING_MARKER:
            fs.remove(posixpath.join(staging, name))
    fs.remove(staging)  # now only the marker is left


def _restore_previous(fs, staging: str, output: str | None) -> bool:
    """A run killed between the two renames of the fallback swap left the old output in its staging
    and none at `output`: put the old one back rather than delete it.

    False when the staging must be kept: on an object store a move is a copy that a kill can stop
    halfway, so an old output left there (`*.previous`) may be the only whole copy even where `output` exists."""
    if output and not fs.exists(output):
        previous = posixpath.join(staging, f"{posixpath.basename(output)}.previous")
        if fs.exists(previous):
            fs.rename(previous, output)
            log.warning("restored %s from the staging of a run killed while it replaced it", output)
    if not storage.on_object_store(staging):
        return True
    return not any(name.endswith(".previous") for name in fs.listdir(staging))


def remove_stale_stagings(parent: str, prefix: str, started: float) -> list[str]:
    """Delete the abandoned stagings `parent/<prefix>*` (see the module docstring); return their paths."""
    parent = storage.normalize(parent)
    fs = storage.file_system(parent)
    if not fs.isdir(parent):
        return []
    removed = []
    for name in sorted(fs.listdir(parent)):
        if not name.startswith(prefix) or name.endswith(LOCK_SUFFIX):
            continue
        staging = posixpath.join(parent, name)
        marker = _read_marker(fs, staging)
        if marker is None or not marker["started"] < started:
            continue
        lock_path, fd = f"{staging}{LOCK_SUFFIX}", None
        if fs.local:
            fd = _lock(lock_path, wait=False)
            if fd is None:
                continue  # its run is alive
        elif time.time() - marker["started"] < STALE_AFTER_SECONDS:
            continue
        try:
            if _read_marker(fs, staging) is not None:  # not removed by its run meanwhile
                if not _restore_previous(fs, staging, marker.get("output")):
                    log.warning(
                        "kept the stale staging %s: it holds an earlier output that a run killed while replacing "
                        "it left there; check %s and delete the staging yourself",
                        staging,
                        marker.get("output") or parent,
                    )
                    continue
                _remove_staging(fs, staging)
                removed.append(staging)
                log.info(
                    "removed the stale staging %s (pid %s on %s, started %s)",
                    staging,
                    marker.get("pid"),
                    marker.get("host"),
                    marker.get("started_at"),
                )
        except Exception as exc:  # e.g. a concurrent cleanup: never fail the job over it
            log.warning("could not remove the stale staging %s: %s", staging, exc)
        finally:
            if fd is not None:
                _unlock(lock_path, fd)
    return removed


class Staging:
    """A scratch folder `parent/<prefix><id>` of one run: marked with `_STAGING.json` and, locally,
    locked for as long as the run lives. `close()` deletes it (and only it)."""

    def __init__(self, parent: str, prefix: str, started: float | None = None, output: str | None = None):
        self.started = time.time() if started is None else started
        self.fs = storage.file_system(storage.normalize(parent))
        self.path = posixpath.join(storage.normalize(parent), f"{prefix}{uuid.uuid4().hex[:8]}")
        self._lock_path = f"{self.path}{LOCK_SUFFIX}"
        self._fd = _lock(self._lock_path, wait=True) if self.fs.local else None
        self._created = False
        try:
            self.fs.mkdir(self.path)
            self._created = True
            self.fs.write_text(
                posixpath.join(self.path, STAGING_MARKER),
                json.dumps(
                    {
                        "output": output,
                        "pid": os.getpid(),
                        "host": socket.gethostname(),
                        "started": self.started,
                        "started_at": datetime.fromtimestamp(self.started, timezone.utc).isoformat(timespec="seconds"),
                    },
                    indent=2,
                ),
            )
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        try:
            if self._created and self.fs.exists(self.path):
                _remove_staging(self.fs, self.path)
        finally:
            if self._fd is not None:
                _unlock(self._lock_path, self._fd)
                self._fd = None

    def __enter__(self) -> "Staging":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _missing_folders(fs, folder: str) -> list[str]:
    """`folder` and its ancestors that do not exist yet, deepest first (local file systems only: an object
    store has no folders to leave behind)."""
    missing = []
    while fs.local and folder and not fs.exists(folder):
        missing.append(folder)
        above = posixpath.dirname(folder.rstrip("/"))
        if above == folder:
            break
        folder = above
    return missing


def _remove_empty_folders(fs, folders: list[str]) -> None:
    """Remove the folders this run created, deepest first, each only while it is empty."""
    for folder in folders:
        try:
            if fs.exists(folder) and not fs.listdir(folder):
                os.rmdir(folder)
        except OSError as exc:  # someone else wrote there meanwhile, or removed it: leave it
            log.debug("left %s: %s", folder, exc)


class StagedOutput:
    """A whole output written beside `final` and swapped into place by `publish()`.

    Checks `final` (check_output), removes the stale stagings of `final`, then creates the staging;
    write the output under `.path`. As a context manager it publishes on a normal exit, and it
    always removes its own staging at the end; when nothing was published, also the folders above it
    that it created (a refused or failed run leaves the tree as it found it)."""

    def __init__(self, output, inputs: Iterable = (), markers: Markers = ()):
        self.inputs, self.markers = list(inputs), list(markers)
        self.final = check_output(output, self.inputs, self.markers)
        parent, name = posixpath.split(self.final)
        fs = storage.file_system(parent)
        self._made = _missing_folders(fs, parent)
        self._published = False
        fs.makedirs(parent)
        started = time.time()
        remove_stale_stagings(parent, f".{name}.staging-", started)
        self.staging = Staging(parent, f".{name}.staging-", started, output=self.final)
        self.path = posixpath.join(self.staging.path, name)
        try:
            self.staging.fs.mkdir(self.path)
        except BaseException:
            self.staging.close()
            raise

    def publish(self) -> None:
        check_output(self.final, self.inputs, self.markers)  # someone may have written there since the start
        swap_into_place(self.path, self.final)
        self._published = True
        self.close()

    def close(self) -> None:
        self.staging.close()
        if not self._published:
            _remove_empty_folders(self.staging.fs, self._made)

    def __enter__(self) -> "StagedOutput":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self.publish()
        finally:
            self.close()
