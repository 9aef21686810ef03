import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

from mtl_core.data.synthetic import RenderSpec, render_sample

ROOT = Path(__file__).resolve().parents[1]
WATCHED = ("data", "runs", "outputs")  # where the project keeps what it generates: tests write elsewhere


def _snapshot() -> set[str]:
    return {str(p.relative_to(ROOT)) for name in WATCHED if (ROOT / name).exists()
            for p in (ROOT / name).rglob("*")}


def pytest_configure(config):
    """Every cache, run store and output of the tests goes to one temporary folder (shared by the
    xdist workers, which inherit the environment, and by the notebooks' kernels)."""
    if hasattr(config, "workerinput"):  # an xdist worker: the controller set it up
        return
    scratch = Path(tempfile.mkdtemp(prefix="mtl_core-tests-"))
    config._mtl_core_scratch = scratch
    os.environ["MTL_CORE_DATA"] = str(scratch / "data")
    os.environ["MTL_CORE_RUNS"] = str(scratch / "runs")
    os.environ["MTL_CORE_CACHE"] = str(scratch / "cache")
    # "auto" precision is measured once per machine (train.cpu_bf16_speedup): measure it here, before the
    # xdist workers start, so that every worker and kernel reads the same choice
    from mtl_core.train import resolved_precision

    resolved_precision("auto")
    config._mtl_core_snapshot = _snapshot()


def pytest_sessionfinish(session, exitstatus):
    config = session.config
    if not hasattr(config, "_mtl_core_snapshot"):
        return
    new = sorted(_snapshot() - config._mtl_core_snapshot)
    if new:  # a test wrote into the project: fail the run, naming the files
        print(f"\nerror: the tests wrote into the project's {'/'.join(WATCHED)}: {new[:10]}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    shutil.rmtree(config._mtl_core_scratch, ignore_errors=True)


@pytest.fixture(scope="session")
def render_samples():
    """A few clean 64x64 and 96x128 renders, shared by the geometry tests."""
    return [render_sample(i, RenderSpec(size=(64, 64))) for i in range(6)] + [
        render_sample(i, RenderSpec(size=(96, 128))) for i in range(3)]


@pytest.fixture(scope="module")
def one_thread():
    """For modules of tiny models: one intra-op thread is as fast, and it keeps the tests fast when other
    processes share the cores (2-thread OpenMP under contention was measured 10-40x slower here)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def survivors():
    """A function: wait up to `timeout` s for processes `pids` to end; return (and kill) those still
    running. A zombie (ended, not yet reaped by its new parent, init) counts as ended."""
    import signal
    import time

    def alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"

    def wait(pids, timeout: float = 30.0) -> list[int]:
        deadline = time.monotonic() + timeout
        while any(alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = [p for p in pids if alive(p)]
        for p in left:
            os.kill(p, signal.SIGKILL)
        return left

    return wait
