"""The notebook suite: execute every notebook through papermill, in dependency order, into
outputs/<profile>/, and write a report that links them and shows their headline tables.

    python -m mtl_core suite --profile quick [--jobs 2] [--only 03_mtinet_ablation ...]

Each notebook writes its figures and a `summary.md` (its headline table) into its own folder
outputs/<profile>/<notebook>/. Training goes through the run store, so a second suite run, or a
notebook that needs the same config as another, reuses stored runs instead of training again.
A failing notebook is reported with its failing cell; the others still run (those that depend on
it are skipped) and the exit code is 1. The report covers the latest result of every notebook
executed into the folder, so a `--only` run updates its notebooks and keeps the others.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from .profiles import PROFILES

PROJECT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = PROJECT / "notebooks"

# notebook -> the notebooks whose stored runs it reads (it would train them itself otherwise, but
# running after them avoids training the same config twice in parallel)
DEPENDS = {
    "00_data_tour": [],
    "01_train": [],
    "02_task_affinity_per_scale": [],
    "03_mtinet_ablation": ["02_task_affinity_per_scale"],  # shares the single-task networks
    "04_rock_ablation": [],
    "05_loss_weighting": ["02_task_affinity_per_scale"],  # shares the single-task networks (and with 03,
    # which may run beside it, the fixed-weight MTL baseline: the run store's lock trains it once)
    "06_inspector": ["01_train", "03_mtinet_ablation", "04_rock_ablation"],
}
NOTEBOOKS = list(DEPENDS)


@dataclass
class NotebookResult:
    name: str
    status: str  # "passed", "failed" or "skipped"
    seconds: float = 0.0
    output: Path | None = None
    error: str = ""  # the failing cell and exception, for a failed notebook
    summary: str = ""  # the notebook's summary.md
    finished: str = field(default_factory=lambda: time.strftime("%Y-%m-%d %H:%M:%S"))


@dataclass
class SuiteReport:
    profile: str
    results: list[NotebookResult] = field(default_factory=list)
    path: Path | None = None

    @property
    def passed(self) -> bool:
        return all(r.status == "passed" for r in self.results)


def _describe_failure(exc: Exception) -> str:
    """The failing cell and exception, from papermill's PapermillExecutionError."""
    if hasattr(exc, "exec_count"):
        return (f"cell [{exc.exec_count}] (index {exc.cell_index}) raised {exc.ename}: {exc.evalue}\n\n"
                f"```\n{exc.source}\n```")
    return f"{type(exc).__name__}: {exc}"


def run_notebook(name: str, profile: str, output_root: Path,
                 parameters: dict | None = None) -> NotebookResult:
    import papermill

    source = NOTEBOOK_DIR / f"{name}.ipynb"
    if not source.exists():
        raise FileNotFoundError(f"notebook {name!r}: {source} does not exist; choose from {NOTEBOOKS}")
    out_dir = output_root / name
    out_dir.mkdir(parents=True, exist_ok=True)
    target = output_root / f"{name}.ipynb"
    params = {"profile": profile, "output_dir": str(out_dir), **(parameters or {})}
    start = time.perf_counter()
    try:
        # MTL_CORE_CELL_TIMEOUT (seconds per cell; unset: no limit) turns a stalled kernel into a failure
        timeout = os.environ.get("MTL_CORE_CELL_TIMEOUT")
        timeout = int(timeout) if timeout else None
        papermill.execute_notebook(str(source), str(target), parameters=params, cwd=str(PROJECT),
                                   execution_timeout=timeout, progress_bar=False, kernel_name="python3")
    except Exception as exc:  # noqa: BLE001 -- any failure is reported and the suite goes on
        return NotebookResult(name, "failed", time.perf_counter() - start, target, _describe_failure(exc))
    summary = out_dir / "summary.md"
    return NotebookResult(name, "passed", time.perf_counter() - start, target,
                          summary=summary.read_text() if summary.exists() else "")


def _load_state(output_root: Path) -> dict[str, dict]:
    """The latest result of every notebook executed into `output_root` (suite.json), by earlier
    invocations too: a `--only` run updates its notebooks' entries and keeps the others'."""
    path = output_root / "suite.json"
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):  # first run, or an unreadable file: start afresh
        return {}


def write_report(report: SuiteReport, output_root: Path, wall_seconds: float | None = None) -> Path:
    """report.md over every notebook with a result in `output_root`: this invocation's, and the latest
    result of the notebooks it did not execute (marked as earlier). suite.json keeps that state."""
    state = _load_state(output_root)
    for r in report.results:
        state[r.name] = {"status": r.status, "seconds": r.seconds, "error": r.error, "finished": r.finished}
    ours = {r.name for r in report.results}
    names = [n for n in NOTEBOOKS if n in state] + sorted(n for n in state if n not in NOTEBOOKS)
    lines = [f"# mtl_core notebook suite — profile `{report.profile}`", ""]
    if wall_seconds is not None:
        lines += [f"This invocation: {len(report.results)} notebook(s) in {wall_seconds / 60:.1f} min "
                  "(wall clock).", ""]
    lines += ["| notebook | status | minutes | figures | finished |", "|---|---|---|---|---|"]
    for name in names:
        entry, folder = state[name], output_root / name
        figures = sorted(folder.glob("*.png")) if folder.exists() else []
        link = f"[{name}]({name}.ipynb)" if entry["status"] != "skipped" else name
        when = entry["finished"] + ("" if name in ours else " (earlier invocation)")
        minutes = entry["seconds"] / 60
        lines.append(f"| {link} | {entry['status']} | {minutes:.1f} | {len(figures)} | {when} |")
    for name in names:
        entry, folder = state[name], output_root / name
        lines += ["", f"## {name}", ""]
        if entry["status"] == "failed":
            lines += ["**Failed**: " + entry["error"]]
        elif entry["status"] == "skipped":
            lines += [f"Skipped: {entry['error']}"]
        else:
            summary = folder / "summary.md"
            lines += [summary.read_text() if summary.exists() else "_(no summary)_"]
            lines += [""] + [f"![{f.stem}]({name}/{f.name})" for f in sorted(folder.glob("*.png"))]
    for filename, text in (("suite.json", json.dumps(state, indent=1)),
                           ("report.md", "\n".join(lines) + "\n")):
        tmp = output_root / f".{filename}.tmp"
        tmp.write_text(text)
        os.replace(tmp, output_root / filename)  # never half a report
    return output_root / "report.md"


def run_suite(profile: str = "quick", jobs: int = 1, output_root: str | os.PathLike | None = None,
              only: list[str] | None = None, parameters: dict | None = None, log=print) -> SuiteReport:
    if profile not in PROFILES:
        raise ValueError(f"profile={profile!r}: choose from {list(PROFILES)}")
    if jobs < 1:
        raise ValueError(f"jobs={jobs}: must be at least 1")
    selected = list(only or NOTEBOOKS)
    unknown = [n for n in selected if n not in DEPENDS]
    if unknown:
        raise ValueError(f"only: unknown notebook(s) {unknown}; choose from {NOTEBOOKS}")
    for name in selected:
        if not (NOTEBOOK_DIR / f"{name}.ipynb").exists():
            raise FileNotFoundError(f"notebook {name!r}: {NOTEBOOK_DIR / (name + '.ipynb')} is missing")
    output_root = Path(output_root or PROJECT / "outputs" / profile)
    output_root.mkdir(parents=True, exist_ok=True)
    # the kernels share the cores: each gets its share of threads (inherited through the environment)
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // jobs)))
    os.environ.setdefault("MTL_CORE_PROGRESS", "0")
    # idle OpenMP threads sleep instead of spinning, so parallel kernels do not starve each other
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    report, done, start = SuiteReport(profile), {}, time.perf_counter()
    pending = list(selected)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        running = {}
        while pending or running:
            for name in list(pending):
                needs = [d for d in DEPENDS[name] if d in selected]
                failed = [d for d in needs if d in done and done[d].status != "passed"]
                if failed:
                    done[name] = NotebookResult(name, "skipped", error=f"depends on failed {failed}")
                    pending.remove(name)
                    log(f"[suite] {name}: skipped (depends on {failed})")
                elif all(d in done for d in needs) and len(running) < jobs:
                    log(f"[suite] {name}: running")
                    running[pool.submit(run_notebook, name, profile, output_root, parameters)] = name
                    pending.remove(name)
            if not running:
                continue
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                result = future.result()
                done[running.pop(future)] = result
                log(f"[suite] {result.name}: {result.status} in {result.seconds / 60:.1f} min"
                    + (f"\n{result.error}" if result.error else ""))
    report.results = [done[name] for name in selected]
    report.path = write_report(report, output_root, time.perf_counter() - start)
    return report
