"""The file lock behind the data cache and the run store: mutual exclusion, and no lock file left over."""

import multiprocessing as mp
import time

from mtl_core.data.cache import file_lock


def _hold(lock, log, tag):
    for _ in range(3):
        with file_lock(lock):
            with open(log, "a") as f:
                f.write(f"in {tag}\n")
            time.sleep(0.02)
            with open(log, "a") as f:
                f.write(f"out {tag}\n")


def test_file_lock_excludes_other_processes_and_leaves_no_lock_file(tmp_path):
    lock, log = tmp_path / "sub" / ".x.lock", tmp_path / "log.txt"
    procs = [mp.get_context("fork").Process(target=_hold, args=(lock, log, k)) for k in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert all(p.exitcode == 0 for p in procs)
    lines = log.read_text().split()
    pairs = list(zip(lines[0::4], lines[1::4], lines[2::4], lines[3::4], strict=True))
    assert len(pairs) == 12  # every block ran, and never two at once: each "in k" is followed by "out k"
    assert all(a == "in" and c == "out" and b == d for a, b, c, d in pairs)
    assert not lock.exists()


def test_building_a_cache_without_a_terminal_prints_one_line_with_its_figures(tmp_path, capsys):
    from mtl_core.data.synthetic import SyntheticScenes

    SyntheticScenes("train", 4, root=tmp_path, workers=1, progress=False)
    lines = [line for line in capsys.readouterr().out.splitlines() if "rendered" in line]
    assert len(lines) == 1 and "rendered 4 samples in " in lines[0] and str(tmp_path) in lines[0]
    SyntheticScenes("train", 4, root=tmp_path, workers=1, progress=False)  # cached: nothing to say
    assert "rendered" not in capsys.readouterr().out


def test_waiting_for_a_held_lock_is_announced_once_and_then_blocks(tmp_path):
    import threading

    lock, said, order = tmp_path / ".run.lock", [], []
    with file_lock(lock, waiting=lambda: said.append("free?")):
        pass
    assert said == []  # a free lock is taken without a word

    def second():
        with file_lock(lock, waiting=lambda: said.append("waiting")):
            order.append("second")

    with file_lock(lock):
        thread = threading.Thread(target=second)
        thread.start()
        deadline = time.monotonic() + 30
        while not said and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)
        order.append("first")  # the second is still blocked: it has announced, not entered
    thread.join(30)
    assert said == ["waiting"] and order == ["first", "second"] and not lock.exists()


def test_render_workers_end_when_the_building_process_is_killed(tmp_path, survivors):
    """A forked render worker holds every file its parent had open, the cache's lock (and a training
    run's) among them: if it outlived a SIGKILLed build, the next build of that cache would wait on it
    for ever. Each worker must notice on its own that its parent is gone."""
    import signal
    import subprocess
    import sys

    pids = tmp_path / "pids"
    pids.mkdir()
    script = f"""
import os, time
from mtl_core.data.cache import build_or_load

def render(i):
    open(os.path.join({str(pids)!r}, str(os.getpid())), "w").close()
    time.sleep(300)  # a long render
    return {{}}

if __name__ == "__main__":
    build_or_load({str(tmp_path / "cache")!r}, "slow", {{"v": 1}}, 16, render, workers=2, progress=False)
"""
    (tmp_path / "builder.py").write_text(script)
    builder = subprocess.Popen([sys.executable, str(tmp_path / "builder.py")], cwd=tmp_path)
    deadline = time.monotonic() + 120
    while len(list(pids.iterdir())) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    workers = [int(p.name) for p in pids.iterdir()]
    assert len(workers) == 2, "the render workers did not start"
    builder.send_signal(signal.SIGKILL)
    builder.wait(30)

    assert not survivors(workers), "render workers outlived the killed build"
