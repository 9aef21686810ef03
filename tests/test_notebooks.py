"""The notebook suite: every notebook executes through papermill in the `ci` profile (via the suite
runner, as `python -m mtl_core suite` does), and the runner reports failures without stopping."""

import json
from pathlib import Path

import nbformat
import pytest

from mtl_core import cli, suite

ROOT = Path(__file__).resolve().parents[1]
SUITE = [name for name in suite.NOTEBOOKS if name != "00_data_tour"]  # 00: tests/test_data_tour.py


@pytest.mark.parametrize("name", suite.NOTEBOOKS)
def test_notebook_is_committed_clean_with_one_parameters_cell(name):
    nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    nbformat.validate(nb)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{name}: expected exactly one cell tagged 'parameters'"
    source = "\n" + tagged[0].source
    for parameter in ("profile", "output_dir", "data_dir"):
        assert f"\n{parameter} = " in source, f"{name}: no {parameter!r} parameter"
    assert "\nseed = " in source or "\nseeds = " in source
    assert '\nprofile = "ci"' in source  # the default executes in seconds
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), f"{name} has outputs"
    assert sum(c.cell_type == "markdown" for c in nb.cells) >= 3, f"{name}: too little explanation"


@pytest.fixture(scope="module")
def ci_suite(tmp_path_factory):
    """The whole suite (except the data tour) in the ci profile, with its own run store."""
    tmp = tmp_path_factory.mktemp("suite")
    patch = pytest.MonkeyPatch()
    patch.setenv("MTL_CORE_RUNS", str(tmp / "runs"))  # inherited by the notebooks' kernels
    patch.setenv("MTL_CORE_CELL_TIMEOUT", "900")  # a stalled cell fails its notebook instead of hanging CI
    try:
        report = suite.run_suite("ci", jobs=2, output_root=tmp / "outputs", only=SUITE, log=lambda _: None)
    finally:
        patch.undo()
    return report, tmp


def test_every_notebook_executes_in_ci(ci_suite):
    report, tmp = ci_suite
    failures = {r.name: r.error for r in report.results if r.status != "passed"}
    assert not failures, failures
    assert [r.name for r in report.results] == SUITE
    for name in SUITE:
        executed = nbformat.read(tmp / "outputs" / f"{name}.ipynb", as_version=4)
        injected = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
        assert injected and 'profile = "ci"' in injected[0].source
        assert all(c.execution_count is not None for c in executed.cells if c.cell_type == "code")
        folder = tmp / "outputs" / name
        assert (folder / "summary.md").read_text().startswith("### "), name
        assert list(folder.glob("*.png")), f"{name} saved no figure"


def test_report_links_notebooks_figures_and_headline_tables(ci_suite):
    report, tmp = ci_suite
    text = report.path.read_text()
    assert report.path == tmp / "outputs" / "report.md"
    for name in SUITE:
        assert f"[{name}]({name}.ipynb)" in text
        figure = sorted((tmp / "outputs" / name).glob("*.png"))[0]
        assert f"({name}/{figure.name})" in text
    assert "| MTI-Net |" in text and "delta_m" in text  # 03's headline table made it into the report


def test_second_suite_run_reuses_stored_runs(ci_suite, monkeypatch):
    _, tmp = ci_suite
    runs = tmp / "runs"
    before = {p: p.stat().st_mtime_ns for p in runs.glob("*/checkpoint.pt")}
    assert len(before) >= 10
    monkeypatch.setenv("MTL_CORE_RUNS", str(runs))
    again = suite.run_suite("ci", output_root=tmp / "again", only=["03_mtinet_ablation"], log=lambda _: None)
    assert again.passed
    after = {p: p.stat().st_mtime_ns for p in runs.glob("*/checkpoint.pt")}
    assert after == before  # nothing retrained, nothing new
    # the same numbers as the first execution
    first = (tmp / "outputs" / "03_mtinet_ablation" / "summary.md").read_text()
    assert (tmp / "again" / "03_mtinet_ablation" / "summary.md").read_text() == first


# ---------------------------------------------------------------- the runner on toy notebooks


def _notebook(path: Path, body: str) -> None:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('profile = "ci"\noutput_dir = "."')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


@pytest.fixture
def toy_suite(tmp_path, monkeypatch):
    folder = tmp_path / "notebooks"
    folder.mkdir()
    write = 'from pathlib import Path\nPath(output_dir, "summary.md").write_text("### ok " + profile)'
    _notebook(folder / "a_ok.ipynb", write)
    _notebook(folder / "b_fails.ipynb", 'x = 1\nraise ValueError("the model diverged")')
    _notebook(folder / "c_needs_b.ipynb", write)
    _notebook(folder / "d_ok.ipynb", write)
    depends = {"a_ok": [], "b_fails": [], "c_needs_b": ["b_fails"], "d_ok": ["a_ok"]}
    monkeypatch.setattr(suite, "NOTEBOOK_DIR", folder)
    monkeypatch.setattr(suite, "DEPENDS", depends)
    monkeypatch.setattr(suite, "NOTEBOOKS", list(depends))
    return tmp_path


def test_failing_notebook_is_reported_with_its_cell_and_the_others_still_run(toy_suite):
    report = suite.run_suite("ci", jobs=2, output_root=toy_suite / "out", log=lambda _: None)
    status = {r.name: r.status for r in report.results}
    assert status == {"a_ok": "passed", "b_fails": "failed", "c_needs_b": "skipped", "d_ok": "passed"}
    assert not report.passed
    failed = next(r for r in report.results if r.name == "b_fails")
    assert "ValueError" in failed.error and "the model diverged" in failed.error
    assert 'raise ValueError("the model diverged")' in failed.error  # the failing cell's source
    text = report.path.read_text()
    assert "**Failed**" in text and "the model diverged" in text and "### ok ci" in text
    assert "depends on failed ['b_fails']" in text


def test_report_keeps_the_notebooks_of_earlier_invocations(toy_suite):
    out = toy_suite / "out"
    suite.run_suite("ci", output_root=out, only=["a_ok"], log=lambda _: None)
    second = suite.run_suite("ci", output_root=out, only=["b_fails"], log=lambda _: None)
    assert [r.name for r in second.results] == ["b_fails"]
    text = second.path.read_text()
    assert "[a_ok](a_ok.ipynb) | passed" in text and "(earlier invocation)" in text and "### ok ci" in text
    assert "[b_fails](b_fails.ipynb) | failed" in text and "the model diverged" in text
    assert "This invocation: 1 notebook(s)" in text
    assert set(json.loads((out / "suite.json").read_text())) == {"a_ok", "b_fails"}
    # a later run of a notebook replaces its entry
    suite.run_suite("ci", output_root=out, only=["b_fails", "c_needs_b"], log=lambda _: None)
    state = json.loads((out / "suite.json").read_text())
    assert state["c_needs_b"]["status"] == "skipped" and state["a_ok"]["status"] == "passed"


def test_cli_exit_codes(toy_suite, capsys):
    assert cli.main(["suite", "--profile", "ci", "--output", str(toy_suite / "o1"), "--only", "a_ok"]) == 0
    assert cli.main(["suite", "--profile", "ci", "--output", str(toy_suite / "o2"), "--only", "b_fails"]) == 1
    assert "not passed: ['b_fails']" in capsys.readouterr().out
    assert cli.main(["suite", "--profile", "ci", "--only", "nope"]) == 2
    assert "unknown notebook(s) ['nope']" in capsys.readouterr().err
    assert cli.main(["suite", "--profile", "ci", "--jobs", "0"]) == 2


def test_run_suite_rejects_bad_arguments(toy_suite):
    with pytest.raises(ValueError, match="profile='huge'"):
        suite.run_suite("huge")
    with pytest.raises(ValueError, match="jobs=0"):
        suite.run_suite("ci", jobs=0)
    (toy_suite / "notebooks" / "d_ok.ipynb").unlink()
    with pytest.raises(FileNotFoundError, match="d_ok"):
        suite.run_suite("ci", only=["d_ok"])


def test_notebook_parameters_reach_the_kernel(toy_suite):
    out = toy_suite / "params"
    result = suite.run_notebook("a_ok", "quick", out)
    assert result.status == "passed" and result.summary == "### ok quick"
    executed = json.loads((out / "a_ok.ipynb").read_text())
    assert any("injected-parameters" in c["metadata"].get("tags", []) for c in executed["cells"])
