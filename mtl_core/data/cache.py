"""An on-disk array cache for generated datasets: built once, in parallel, verified, never half-written.

Layout: `<root>/<name>-<hash>/` holds one `.npy` file per field and `meta.json` (the generator's
parameters, the fields' shapes, dtypes and SHA-256 checksums). The directory is built under a
temporary name and renamed into place only when complete, so a crash or a kill never leaves a
cache that looks valid; a file lock keeps two processes from building the same cache at once.
On open the checksums are verified; a stale or corrupt cache is rebuilt.

Fields are either fixed-shape (one row per sample, stored as an (N, ...) array) or variable-length
(e.g. boxes: rows of all samples concatenated, plus an `<field>__offsets` array of N + 1 offsets).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from ..progress import progress_bar, report

_VERIFIED: set[tuple[str, float]] = set()  # (directory, meta mtime) already checked in this process


def atomic_write(path: Path, write) -> None:
    """Write through `write(file_object)` into a temporary file, fsync, then rename over `path`."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def params_key(params: dict) -> str:
    """A short stable hash of JSON-serialisable parameters."""
    blob = json.dumps(params, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


@contextmanager
def file_lock(path: Path, waiting: Callable[[], None] | None = None) -> Iterator[None]:
    """An exclusive advisory lock on `path` for the duration of the block. The lock file is created for
    the block and removed after it, so no empty lock files pile up. `waiting` is called once if another
    process holds the lock, before blocking on it (so that a wait is never silent)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        handle = open(path, "a")  # noqa: SIM115 -- closed below, after the lock is released
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if waiting is not None:
                waiting()
                waiting = None
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:  # the holder before us may have removed the file we waited on: then lock the new one
            if os.fstat(handle.fileno()).st_ino == os.stat(path).st_ino:
                break
        except FileNotFoundError:
            pass
        handle.close()
    try:
        yield
    finally:
        path.unlink(missing_ok=True)  # while still locked: a waiter on this file sees it gone and retries
        handle.close()


def exit_with_parent(parent: int, interval: float = 1.0) -> None:
    """End this worker process once process `parent`, which started it, is gone, even if the parent was
    killed with SIGKILL and could not stop its workers. An orphaned worker would go on computing, and a
    forked one keeps every file its parent had open, its run's and its cache's locks among them, so a
    restarted suite or training would wait on it for ever. Used as the initializer of every worker pool
    (the suite's training processes, the renderer's workers below)."""
    import threading

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _check(directory: Path, params: dict) -> str | None:
    """None if `directory` holds a complete cache for `params`, else the reason it does not."""
    meta_path = directory / "meta.json"
    if not meta_path.exists():
        return "missing meta.json"
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        return f"unreadable meta.json ({exc})"
    if meta.get("params") != json.loads(json.dumps(params, default=str)):
        return "parameters differ (stale cache)"
    marker = (str(directory), meta_path.stat().st_mtime)
    if marker in _VERIFIED:
        return None
    for name, info in meta["fields"].items():
        path = directory / f"{name}.npy"
        if not path.exists():
            return f"missing {path.name}"
        if _sha256(path) != info["sha256"]:
            return f"checksum mismatch in {path.name} (corrupt file)"
    _VERIFIED.add(marker)
    return None


def _render_chunk(args):
    render, indices = args
    return [render(i) for i in indices]


def _build(directory: Path, params: dict, num_samples: int, render: Callable[[int], dict],
           varlen: tuple[str, ...], workers: int, progress: bool | None, desc: str) -> None:
    start = time.perf_counter()
    tmp = directory.parent / f".tmp-{directory.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        fixed: dict[str, np.ndarray] = {}
        rows: dict[str, list[np.ndarray]] = {name: [] for name in varlen}
        chunks = [list(range(i, min(i + 8, num_samples))) for i in range(0, num_samples, 8)]

        def store(index: int, sample: dict) -> None:
            for name, value in sample.items():
                value = np.asarray(value)
                if name in rows:
                    rows[name].append(value)
                    continue
                if name not in fixed:
                    fixed[name] = np.lib.format.open_memmap(
                        tmp / f"{name}.npy", mode="w+", dtype=value.dtype, shape=(num_samples, *value.shape))
                fixed[name][index] = value

        with progress_bar(total=num_samples, desc=desc, enable=progress) as bar:
            if workers <= 1:
                results = map(_render_chunk, [(render, c) for c in chunks])
                pool = None
            else:
                # fork keeps start-up cheap; the renderer is numpy-only, so forking is safe
                pool = ProcessPoolExecutor(workers, mp_context=get_context("fork"),
                                           initializer=exit_with_parent, initargs=(os.getpid(),))
                results = pool.map(_render_chunk, [(render, c) for c in chunks])
            try:
                for chunk, samples in zip(chunks, results, strict=True):
                    for index, sample in zip(chunk, samples, strict=True):
                        store(index, sample)
                    bar.update(len(chunk))
            finally:
                if pool is not None:
                    pool.shutdown(cancel_futures=True)
            report(bar, f"{desc}: rendered {num_samples} samples in {time.perf_counter() - start:.1f} s "
                        f"({max(workers, 1)} process{'es' if workers > 1 else ''}) -> {directory}")
        for array in fixed.values():
            array.flush()
        for name, values in rows.items():
            offsets = np.concatenate([[0], np.cumsum([len(v) for v in values])]).astype(np.int64)
            np.save(tmp / f"{name}.npy", np.concatenate(values) if values else np.zeros((0,)))
            np.save(tmp / f"{name}__offsets.npy", offsets)
        fixed.clear()  # close the memory maps before hashing
        fields = {}
        for path in sorted(tmp.glob("*.npy")):
            array = np.load(path, mmap_mode="r")
            fields[path.stem] = {"shape": list(array.shape), "dtype": str(array.dtype),
                                 "sha256": _sha256(path)}
        meta = {"params": params, "num_samples": num_samples, "fields": fields}
        with open(tmp / "meta.json", "w") as f:
            json.dump(meta, f, indent=1, default=str)
            f.flush()
            os.fsync(f.fileno())
        if directory.exists():
            shutil.rmtree(directory)
        os.rename(tmp, directory)  # atomic: the cache appears complete or not at all
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def build_or_load(root: str | os.PathLike, name: str, params: dict, num_samples: int,
                  render: Callable[[int], dict], varlen: tuple[str, ...] = (), workers: int | None = None,
                  progress: bool | None = None) -> tuple[Path, dict[str, np.ndarray]]:
    """Return (cache directory, {field: read-only memory-mapped array}), building the cache if needed.

    `render(i)` must be a picklable function returning the sample's fields as numpy arrays; it is
    called for every i in [0, num_samples) in `workers` processes (default: all cores).
    """
    root = Path(root)
    directory = root / f"{name}-{params_key(params)}"
    reason = _check(directory, params)
    if reason is not None:
        with file_lock(root / f".{directory.name}.lock"):
            reason = _check(directory, params)  # another process may have built it meanwhile
            if reason is not None:
                if directory.exists():
                    warnings.warn(f"rebuilding cache {directory}: {reason}", stacklevel=2)
                for leftover in root.glob(f".tmp-{directory.name}-*"):  # from a killed build
                    shutil.rmtree(leftover, ignore_errors=True)
                workers = workers if workers is not None else (os.cpu_count() or 1)
                _build(directory, params, num_samples, render, varlen, workers, progress, desc=name)
    arrays = {p.stem: np.load(p, mmap_mode="r") for p in directory.glob("*.npy")}
    return directory, arrays
