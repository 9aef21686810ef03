"""The study settings and table helpers the notebooks share."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mtl_core import experiments
from mtl_core.profiles import PROFILES
from mtl_core.runs import RunResult
from mtl_core.train import TrainConfig


def fake(metrics: dict) -> RunResult:
    return RunResult(TrainConfig(), Path("."), metrics, pd.DataFrame(), trained=False)


def test_every_profile_has_study_settings_and_base_config_applies_them():
    assert set(experiments.STUDY) == set(PROFILES)
    config = experiments.base_config("quick", model="mtinet", tasks=("semseg", "depth"), seed=3)
    s = experiments.study("quick")
    assert config.size == tuple(PROFILES["quick"]["size"]) and config.num_train == s["num_train"]
    assert config.epochs == s["epochs"] and config.eval_every == max(1, s["epochs"] // 8) and config.seed == 3
    assert config.backbone_options == {"widths": list(s["widths"])}
    # explicit fields win, a non-cnn backbone gets no cnn widths
    config = experiments.base_config("ci", epochs=3, eval_every=1, backbone="resnet18")
    assert (config.epochs, config.eval_every, config.backbone_options) == (3, 1, {})


def test_bad_study_arguments_fail_before_training():
    with pytest.raises(ValueError, match="profile='huge'"):
        experiments.study("huge")
    with pytest.raises(ValueError, match="unknown config field"):
        experiments.base_config("ci", colour="red")
    with pytest.raises(ValueError, match="model='nonet'"):
        experiments.base_config("ci", model="nonet")
    with pytest.raises(ValueError, match="seeds"):
        experiments.run_variants({"x": {}}, "ci", seeds=())


def test_delta_m_table_known_answer():
    # single-task: semseg mIoU 50, depth RMSE 1.0 (two seeds: 48/52 and 0.9/1.1 -> means 50, 1.0)
    singles = {"semseg": [fake({"semseg/miou": 48.0, "semseg/pixel_acc": 80.0}),
                          fake({"semseg/miou": 52.0, "semseg/pixel_acc": 80.0})],
               "depth": [fake({"depth/rmse": 0.9}), fake({"depth/rmse": 1.1})]}
    # seed 0: mIoU +10% , RMSE 10% lower (better) -> Δm +10; seed 1: mIoU -10%, RMSE 10% higher -> -10
    results = {"mtl": [fake({"semseg/miou": 55.0, "semseg/pixel_acc": 0.0, "depth/rmse": 0.9}),
                       fake({"semseg/miou": 45.0, "semseg/pixel_acc": 0.0, "depth/rmse": 1.1})]}
    table = experiments.delta_m_table(results, singles, ("semseg", "depth"))
    assert table.loc["mtl", "delta_m"] == pytest.approx(0.0)  # the primary metrics only: pixel_acc ignored
    assert table.loc["mtl", "delta_m_std"] == pytest.approx(10.0)
    assert table.loc["mtl", "Δ semseg (%)"] == pytest.approx(0.0)
    # every metric of semseg: pixel_acc 0 vs 80 is -100% on its own
    every = experiments.delta_m_table(results, singles, ("semseg", "depth"),
                                      metrics={"semseg": ["miou", "pixel_acc"], "depth": ["rmse"]})
    assert every.loc["mtl", "Δ semseg (%)"] == pytest.approx(-50.0)
    assert every.loc["mtl", "delta_m"] == pytest.approx(-25.0)
    with pytest.raises(ValueError, match="'normals'"):
        experiments.delta_m_table(results, singles, ("semseg", "normals"))


def test_metrics_table_and_formatting():
    results = {"a": [fake({"depth/rmse": 1.0}), fake({"depth/rmse": 3.0})], "b": [fake({"depth/rmse": 2.0})]}
    table = experiments.metrics_table(results, ("depth",), primary_only=True)
    assert list(table.columns) == [("depth/rmse", "mean"), ("depth/rmse", "std")]
    assert table.loc["a", ("depth/rmse", "mean")] == 2.0 and table.loc["a", ("depth/rmse", "std")] == 1.0
    shown = experiments.format_mean_std(table, 1)
    assert shown.loc["a", "depth/rmse"] == "2.0 ± 1.0" and shown.loc["b", "depth/rmse"] == "2.0"


def test_training_minutes_prefer_cpu_time_and_say_which():
    def timed(seconds, cpu=None):
        run = fake({})
        history = {"seconds": seconds} if cpu is None else {"seconds": seconds, "cpu_seconds": cpu}
        return RunResult(run.config, run.directory, run.metrics, pd.DataFrame(history), False)

    # two seeds of "a" (60 + 60 and 120 + 120 CPU seconds: 2 and 4 min, mean 3), one of "b"
    both = {"a": [timed([100, 100], [60, 60]), timed([300, 300], [120, 120])], "b": [timed([90], [90])]}
    cost = experiments.training_minutes(both)
    assert cost.name == "train CPU min"
    assert cost["a"] == pytest.approx(3.0) and cost["b"] == pytest.approx(1.5)
    # one run without CPU times (trained before they were recorded): wall clock for all, named so
    mixed = {"a": [timed([60, 60], [30, 30])], "b": [timed([90])]}
    cost = experiments.training_minutes(mixed)
    assert cost.name.startswith("train min (wall clock")
    assert cost["a"] == pytest.approx(2.0) and cost["b"] == pytest.approx(1.5)


def test_summary_is_markdown(tmp_path):
    frame = pd.DataFrame({"delta_m": [1.23456, -2.0]}, index=pd.Index(["MTI-Net", "PAD-Net"], name="model"))
    path = experiments.write_summary(tmp_path / "nb", "03 · x", {"Δm": frame, "Conclusion": "- holds"})
    text = path.read_text()
    assert text.startswith("### 03 · x\n")
    assert "| model | delta_m |\n|---|---|\n| MTI-Net | 1.23 |\n| PAD-Net | -2 |" in text
    assert "**Conclusion**\n\n- holds" in text
    assert not list((tmp_path / "nb").glob("*.tmp"))


def test_resources_counts_the_config_model():
    config = experiments.base_config("ci", model="mtl_baseline", tasks=("depth",))
    small = experiments.resources(config)
    wide = experiments.resources(experiments.base_config("ci", model="mtl_baseline", tasks=("depth",),
                                                         backbone_options={"widths": [16, 32, 48, 64]}))
    assert 0 < small["params (M)"] < wide["params (M)"] and 0 < small["GMACs"] < wide["GMACs"]


def test_delta_m_against_a_zero_baseline_is_nan_with_a_warning():
    singles = {"semseg": [fake({"semseg/miou": 0.0})]}
    with pytest.warns(UserWarning, match="semseg/miou"):
        table = experiments.delta_m_table({"m": [fake({"semseg/miou": 10.0})]}, singles, ("semseg",))
    assert np.isnan(table.loc["m", "delta_m"])


def test_the_papers_datasets_are_evaluated_with_the_official_protocol():
    from mtl_core.train import eval_protocol, validate

    assert eval_protocol(TrainConfig(dataset="nyud_mt")) == "official"
    assert eval_protocol(TrainConfig(dataset="pascal_mt", tasks=("semseg",))) == "official"
    assert eval_protocol(TrainConfig()) == "default"  # the synthetic studies
    assert eval_protocol(TrainConfig(eval_protocol="official")) == "official"
    with pytest.raises(ValueError, match="eval_protocol='papers'"):
        validate(TrainConfig(eval_protocol="papers"))


def test_delta_m_uses_the_runs_protocol_and_refuses_mixed_protocols():
    def run(metrics, protocol):
        return RunResult(TrainConfig(tasks=("sal",), eval_protocol=protocol), Path("."), metrics,
                         pd.DataFrame(), trained=False)

    single = {"sal/maxF": 50.0, "sal/miou": 40.0}
    better_iou = {"sal/maxF": 50.0, "sal/miou": 44.0}  # +10 % on mIoU, 0 on maxF
    official = experiments.delta_m_table({"m": [run(better_iou, "official")]},
                                         {"sal": [run(single, "official")]}, ("sal",))
    default = experiments.delta_m_table({"m": [run(better_iou, "default")]},
                                        {"sal": [run(single, "default")]}, ("sal",))
    assert official.loc["m", "delta_m"] == pytest.approx(10.0)  # MTI-Net's Δm reads saliency mIoU
    assert default.loc["m", "delta_m"] == pytest.approx(0.0)  # the default reads maxF
    assert experiments.evaluation_protocol({"m": [run(single, "official")]}) == "official"
    with pytest.raises(ValueError, match="different protocols"):
        experiments.delta_m_table({"m": [run(better_iou, "official")]}, {"sal": [run(single, "default")]},
                                  ("sal",))


def test_convergence_known_answer():
    """The change over the last quarter: evaluations at epochs 4, 8, 12, 16 -> epoch 12 vs epoch 16,
    relative to the final value, the worst seed counts; a history without that evaluation gives NaN."""
    def run(miou, rmse):
        h = pd.DataFrame({"epoch": range(1, 17), "semseg/miou": np.nan, "depth/rmse": np.nan})
        h.loc[h.epoch.isin([4, 8, 12, 16]), "semseg/miou"] = miou
        h.loc[h.epoch.isin([4, 8, 12, 16]), "depth/rmse"] = rmse
        return RunResult(TrainConfig(), Path("."), {}, h, trained=False)

    results = {"flat": [run([10, 20, 49, 50], [2, 1.5, 1.0, 1.0]),
                        run([10, 20, 50, 50], [2, 1.5, 1.01, 1.0])],
               "moving": [run([10, 20, 30, 40], [2, 1.5, 1.2, 1.0])],
               "unevaluated": [RunResult(TrainConfig(), Path("."), {}, pd.DataFrame(), trained=False)]}
    table = experiments.convergence(results, ("semseg", "depth"))
    assert table.loc["flat", "Δ semseg (%)"] == pytest.approx(2.0)  # |50 - 49| / 50
    assert table.loc["flat", "Δ depth (%)"] == pytest.approx(1.0)  # the second seed: |1.0 - 1.01| / 1.0
    assert table.loc["flat", "worst"] == pytest.approx(2.0) and not table.loc["flat", "converged"]
    assert table.loc["moving", "Δ semseg (%)"] == pytest.approx(25.0) and not table.loc["moving", "converged"]
    assert np.isnan(table.loc["unevaluated", "worst"]) and not table.loc["unevaluated", "converged"]
    results["flat"][0] = run([10, 20, 49.5, 50], [2, 1.5, 1.0, 1.0])
    assert experiments.convergence(results, ("semseg", "depth")).loc["flat", "converged"]
