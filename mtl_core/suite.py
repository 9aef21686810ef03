"""The notebook suite: execute every notebook through papermill, in dependency order, into
outputs/<profile>/, and write a report that links them and shows their headline tables.

    python -m mtl_core suite --profile quick [--jobs 2] [--only 03_mtinet_ablation ...]

Each notebook writes its figures and a `summary.md` (its headline table) into its own folder
outputs/<profile>/<notebook>/. Training goes through the run store, so a second suite run, or a
notebook that needs the same config as another, reuses stored runs instead of training again.
A failing notebook is reported with its failing cell; the others still run (those that depend on
it are skipped) and the exit code is 1.
"""

from __future__ import annotations

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
    "05_loss_weighting": ["03_mtinet_ablation"],  # shares the fixed-weight MTL baseline
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
        papermill.execute_notebook(str(source), str(target), parameters=params, cwd=str(PROJECT),
                                   progress_bar=False, kernel_name="python3")
    except Exception as exc:  # noqa: BLE001 -- any failure is reported and the suite goes on
        return NotebookResult(name, "failed", time.perf_counter() - start, target, _describe_failure(exc))
    summary = out_dir / "summary.md"
    return NotebookResult(name, "passed", time.perf_counter() - start, target,
                          summary=summary.read_text() if summary.exists() else "")


def write_report(report: SuiteReport, output_root: Path) -> Path:
    lines = [f"# mtl_core notebook suite — profile `{report.profile}`", "",
             "| notebook | status | minutes | figures |", "|---|---|---|---|"]
    for r in report.results:
        figures = sorted((output_root / r.name).glob("*.png")) if (output_root / r.name).exists() else []
        link = f"[{r.name}]({r.name}.ipynb)" if r.status != "skipped" else r.name
        lines.append(f"| {link} | {r.status} | {r.seconds / 60:.1f} | {len(figures)} |")
    for r in report.results:
        lines += ["", f"## {r.name}", ""]
        if r.status == "failed":
            lines += ["**Failed**: " + r.error]
        elif r.status == "skipped":
            lines += [f"Skipped: {r.error}"]
        else:
            lines += [r.summary or "_(no summary)_"]
            figures = sorted((output_root / r.name).glob("*.png"))
            lines += [""] + [f"![{f.stem}]({r.name}/{f.name})" for f in figures]
    path = output_root / "report.md"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)
    return path


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

    report, done = SuiteReport(profile), {}
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
    report.path = write_report(report, output_root)
    return report
