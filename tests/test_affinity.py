"""Per-scale task affinity: RSA, gradient cosines and lookahead affinity, and their summaries."""

import copy
import itertools

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
import torch

from mtl_core import affinity
from mtl_core.losses import task_losses
from mtl_core.models import build_model
from mtl_core.tasks import make_tasks
from mtl_core.train import TrainConfig

WIDTHS = {"widths": (8, 16, 24, 32)}


# ---------------------------------------------------------------- RSA


def test_rdm_known_answers():
    a = np.array([1.0, 2.0, 3.0, 4.0])
    features = np.stack([a, 2 * a + 1, -a, np.array([1.0, -1.0, 1.0, -1.0])])
    d = affinity.rdm(features)
    assert d[0, 1] == pytest.approx(0.0, abs=1e-12)  # a positive affine copy: identical
    assert d[0, 2] == pytest.approx(2.0)  # anti-correlated: maximal dissimilarity
    assert np.allclose(np.diag(d), 0) and np.allclose(d, d.T)
    expected = 1 - np.corrcoef(a, features[3])[0, 1]
    assert d[0, 3] == pytest.approx(expected)


def test_rdm_similarity_is_spearman_of_upper_triangles():
    rng = np.random.default_rng(0)
    base = affinity.rdm(rng.normal(size=(8, 20)))
    monotone = base ** 3  # same ranks: Spearman exactly 1
    flipped = -base  # reversed ranks: exactly -1
    m = affinity.rdm_similarity({"a": base, "b": monotone, "c": flipped})
    assert m.loc["a", "b"] == pytest.approx(1.0)
    assert m.loc["a", "c"] == pytest.approx(-1.0)
    assert m.loc["b", "a"] == m.loc["a", "b"] and m.loc["a", "a"] == 1.0
    # a resample that repeats image 0 leaves out the (0, 0) self-pairs
    resampled = affinity.rdm_similarity({"a": base, "b": monotone}, images=[0, 0, 1, 2, 3])
    assert resampled.loc["a", "b"] == pytest.approx(1.0)
    # a resample is a multiset of images: the order it lists them in changes nothing, even where the
    # RDMs are not exactly symmetric (float rounding) and a repeated pair must stay a tie
    other = affinity.rdm(rng.normal(size=(8, 20)))
    noisy = {n: m + np.triu(rng.normal(0, 1e-9, (8, 8)), 1) for n, m in (("a", base), ("c", other))}
    drawn = [5, 1, 5, 7, 0, 1, 5, 3]
    assert np.array_equal(affinity.rdm_similarity(noisy, images=drawn),
                          affinity.rdm_similarity(noisy, images=sorted(drawn)[::-1]))


def test_rsa_per_scale_identical_networks_agree_and_different_ones_do_not():
    torch.manual_seed(0)
    tasks = make_tasks(("depth",))
    net = build_model("single_task", tasks, backbone_options=WIDTHS)
    twin = copy.deepcopy(net)
    torch.manual_seed(1)
    other = build_model("single_task", tasks, backbone_options=WIDTHS)
    images = torch.rand(12, 3, 64, 64)
    table = affinity.rsa_per_scale({"a": net, "b": twin, "c": other}, images, bootstrap=20)
    assert sorted(table["scale"].unique()) == [0, 1, 2, 3]
    same = table[(table.task_a == "a") & (table.task_b == "b")]
    assert np.allclose(same["rsa"], 1.0) and np.allclose(same["low"], 1.0) and np.allclose(same["high"], 1.0)
    diff = table[(table.task_a == "a") & (table.task_b == "c")]
    assert (diff["rsa"] < 0.999).all()
    assert (table["low"] <= table["rsa"] + 1e-9).all() or (table["high"] >= table["low"]).all()
    matrices = affinity.rsa_matrices(table)
    assert matrices[0].loc["c", "a"] == matrices[0].loc["a", "c"] == diff[diff.scale == 0]["rsa"].item()
    assert np.allclose(np.diag(matrices[3]), 1.0)


# ---------------------------------------------------------------- gradient and lookahead affinity


def _batch(n=4, size=64):
    torch.manual_seed(3)
    return {"image": torch.rand(n, 3, size, size), "semseg": torch.randint(0, 13, (n, size, size)),
            "depth": torch.rand(n, 1, size, size) * 4 + 0.5,
            "normals": torch.nn.functional.normalize(torch.randn(n, 3, size, size), dim=1)}


def test_scale_groups_partition_the_backbone():
    net = build_model("mtl_baseline", make_tasks(("semseg",)), backbone_options=WIDTHS)
    groups = affinity.scale_parameter_groups(net.backbone)
    assert len(groups) == 4
    ids = [id(p) for g in groups for p in g]
    assert len(ids) == len(set(ids)) == len(list(net.backbone.parameters()))
    with pytest.raises(ValueError, match="stem"):
        affinity.scale_parameter_groups(torch.nn.Linear(2, 2))


def test_hrnet_scale_groups_are_its_branches_and_partition_it():
    backbone = build_model("mtl_baseline", make_tasks(("semseg",)), backbone="hrnet").backbone
    groups = affinity.scale_parameter_groups(backbone)
    assert len(groups) == 4
    ids = [id(p) for g in groups for p in g]
    assert len(ids) == len(set(ids)) == len(list(backbone.parameters()))
    stem = {id(p) for p in backbone.stem.parameters()}
    assert stem <= {id(p) for p in groups[0]}  # the stem runs at the finest resolution
    for s, group in enumerate(groups):
        assert {id(p) for p in backbone.stages[s].parameters()} == {id(p) for p in group} - stem


def test_scale_features_follow_the_backbone_order_finest_first():
    torch.manual_seed(0)
    net = build_model("single_task", make_tasks(("depth",)), backbone="hrnet")
    features = affinity.scale_features(net, torch.rand(3, 3, 64, 64))
    strides, channels = net.backbone.strides, net.backbone.channels
    assert strides == [2, 4, 8, 16]
    expected = [(3, c * (64 // st) ** 2) for c, st in zip(channels, strides, strict=True)]
    assert [f.shape for f in features] == expected


def test_probe_cosines_match_a_direct_computation_and_leave_the_model_unchanged():
    torch.manual_seed(0)
    tasks = make_tasks(("semseg", "depth", "normals"))
    net = build_model("mtl_baseline", tasks, backbone_options=WIDTHS)
    batch = _batch()
    before = copy.deepcopy(net.state_dict())
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    probe = affinity.AffinityProbe(every=2)
    probe(net, batch, tasks, optimizer, step=1)  # not a multiple of `every`: nothing measured
    assert probe.records == []
    probe(net, batch, tasks, optimizer, step=2)
    for key, value in net.state_dict().items():  # the lookahead steps are undone exactly
        assert torch.equal(value, before[key]), key
    assert all(p.grad is None for p in net.parameters())
    table = probe.table()
    # the previous batch was this very batch: a same-task cosine would be 1 by construction, none is recorded
    assert set(table["kind"]) == {"cosine", "lookahead"} and set(table["scale"]) == {0, 1, 2, 3}

    # the same cosine by hand, at scale 2
    net.eval()
    losses = task_losses(net(batch["image"]), batch, tasks)
    params = affinity.scale_parameter_groups(net.backbone)[2]
    grads = {t: torch.cat([g.flatten() for g in torch.autograd.grad(losses[t] * tasks[t].weight, params,
                                                                     retain_graph=True)])
             for t in tasks}
    for a, b in itertools.combinations(tasks, 2):
        expected = torch.nn.functional.cosine_similarity(grads[a], grads[b], dim=0).item()
        got = table.query("kind == 'cosine' and scale == 2 and task_a == @a and task_b == @b")["value"].item()
        assert got == pytest.approx(expected, abs=1e-5)

    # lookahead of a task on itself: a small step along its own gradient lowers its loss
    own = table.query("kind == 'lookahead' and task_a == task_b")
    assert (own["value"] > 0).all()


def _direct_gradients(net, batch, tasks, scale):
    losses = task_losses(net(batch["image"]), batch, tasks)
    params = affinity.scale_parameter_groups(net.backbone)[scale]
    return {t: torch.cat([g.flatten() for g in torch.autograd.grad(losses[t] * tasks[t].weight, params,
                                                                   retain_graph=True)]) for t in tasks}


def test_probe_measures_each_task_against_itself_on_the_previous_batch():
    torch.manual_seed(0)
    tasks = make_tasks(("semseg", "depth"))
    net = build_model("mtl_baseline", tasks, backbone_options=WIDTHS)
    first, second = _batch(), _batch()
    torch.manual_seed(5)
    second = {**second, "image": torch.rand_like(second["image"])}  # other images, same labels' shapes
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    probe = affinity.AffinityProbe(every=2)
    probe(net, first, tasks, optimizer, step=1)  # remembered as the previous batch
    probe(net, second, tasks, optimizer, step=2)
    same = probe.table().query("kind == 'cosine_same_task'")
    assert set(same["scale"]) == {0, 1, 2, 3} and (same["task_a"] == same["task_b"]).all()
    assert sorted(same["task_a"].unique()) == ["depth", "semseg"]
    net.eval()
    now, before = _direct_gradients(net, second, tasks, 1), _direct_gradients(net, first, tasks, 1)
    for t in tasks:  # at the same parameters: the cosine of the task's gradients on the two batches
        expected = torch.nn.functional.cosine_similarity(now[t], before[t], dim=0).item()
        got = same.query("scale == 1 and task_a == @t")["value"].item()
        assert got == pytest.approx(expected, abs=1e-5) and got < 1 - 1e-4


def test_training_affinity_is_cached(tmp_path, monkeypatch):
    config = TrainConfig(model="mtl_baseline", tasks=("semseg", "depth"), num_train=16, num_val=8, epochs=1,
                         batch_size=8, backbone_options={"widths": [8, 16, 24, 32]}, augment=False)
    first = affinity.training_affinity(config, every=1, root=tmp_path, progress=False)
    assert first["step"].tolist().count(1) > 0 and set(first["step"]) == {1, 2}
    # step 1 has no previous batch; every later measurement compares each task with itself
    same = first.query("kind == 'cosine_same_task'")
    assert set(same["step"]) == {2} and set(same["task_a"]) == {"semseg", "depth"}
    monkeypatch.setattr(affinity, "fit", lambda *a, **k: pytest.fail("trained again"))
    again = affinity.training_affinity(config, every=1, root=tmp_path)
    pd.testing.assert_frame_equal(first.reset_index(drop=True), again)
    # the probe's version is in the file name: a file from an older probe (without the same-task
    # cosines) is never read as this one's
    (stored,) = tmp_path.glob("affinity-*.json")
    assert stored.name.endswith(f"-{affinity.PROBE_VERSION}.json") and affinity.PROBE_VERSION != "v3"


# ---------------------------------------------------------------- summaries


def _records(values):
    """Cosine records at 2 scales from {scale: {(a, b): value}}, each measured at 2 steps."""
    rows = []
    for scale, pairs in values.items():
        for (a, b), v in pairs.items():
            rows += [{"step": s, "scale": scale, "kind": "cosine", "task_a": a, "task_b": b, "value": v + d}
                     for s, d in ((10, -0.1), (20, 0.1))]
    return pd.DataFrame(rows)


def test_matrices_pairs_and_ranking_changes():
    same_order = {0: {("a", "b"): 0.9, ("a", "c"): 0.5, ("b", "c"): 0.1},
                  1: {("a", "b"): 0.8, ("a", "c"): 0.4, ("b", "c"): 0.0}}
    matrices = affinity.affinity_matrices(_records(same_order), "cosine")
    assert matrices[0].loc["b", "a"] == pytest.approx(0.9)  # mean over the steps, symmetric
    assert matrices[1].loc["c", "c"] == 1.0
    pairs = affinity.pair_table(matrices)
    assert list(pairs.columns) == ["scale 0", "scale 1"] and pairs.loc["a–c", "scale 1"] == pytest.approx(0.4)
    summary = affinity.ranking_changes(pairs)
    assert summary["top_pair"] == {"scale 0": "a–b", "scale 1": "a–b"}
    assert not summary["top_pair_changes"] and summary["min_tau"] == pytest.approx(1.0)

    reversed_order = {0: same_order[0], 1: {("a", "b"): 0.0, ("a", "c"): 0.4, ("b", "c"): 0.8}}
    summary = affinity.ranking_changes(affinity.pair_table(affinity.affinity_matrices(
        _records(reversed_order), "cosine")))
    assert summary["top_pair"]["scale 1"] == "b–c" and summary["top_pair_changes"]
    assert summary["min_tau"] == pytest.approx(-1.0)


def test_heatmap_and_pair_figures_are_saved(tmp_path):
    matrices = affinity.affinity_matrices(_records({0: {("a", "b"): 0.3}, 1: {("a", "b"): -0.2}}), "cosine")
    fig = affinity.plot_scale_heatmaps(matrices, "t", save_to=tmp_path / "h.png")
    assert len(fig.axes) == 2 and fig.axes[1].get_title() == "scale 1"  # no strides given: none assumed
    fig = affinity.plot_pairs_across_scales(affinity.pair_table(matrices), "cos", save_to=tmp_path / "p.png")
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["0", "1"]
    assert (tmp_path / "h.png").stat().st_size > 0 and (tmp_path / "p.png").stat().st_size > 0


def test_figures_and_pair_tables_label_the_backbones_strides():
    matrices = affinity.affinity_matrices(_records({0: {("a", "b"): 0.3}, 1: {("a", "b"): -0.2}}), "cosine")
    hrnet = [2, 4, 8, 16]
    fig = affinity.plot_scale_heatmaps(matrices, "t", strides=hrnet)
    assert [ax.get_title() for ax in fig.axes] == ["scale 0 (1/2)", "scale 1 (1/4)"]
    pairs = affinity.pair_table(matrices, strides=hrnet)
    assert list(pairs.columns) == ["scale 0 (1/2)", "scale 1 (1/4)"]
    # the ticks follow the scale in each column's name, also for a subset of the scales
    fig = affinity.plot_pairs_across_scales(pairs[["scale 1 (1/4)"]], "cos", strides=hrnet)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["1/4"]
    with pytest.raises(ValueError, match="scale 1"):
        affinity.plot_scale_heatmaps(matrices, "t", strides=[2])  # too few strides: no made-up label


def test_ranking_reversals_need_separated_intervals_in_opposite_orders():
    values = pd.DataFrame({"scale 1": [0.8, 0.5, 0.3], "scale 2": [0.4, 0.7, 0.35]}, index=["ab", "ac", "bc"])
    tight = affinity.ranking_reversals(values, values - 0.05, values + 0.05)
    # ab > ac at scale 1 and ac > ab at scale 2, both with separated intervals; bc vs ab: 0.35 vs 0.4 overlap
    assert ("ab", "ac", "scale 1", "scale 2") in tight and ("ac", "ab", "scale 2", "scale 1") in tight
    assert not any({p, q} == {"ab", "bc"} for p, q, *_ in tight)
    wide = affinity.ranking_reversals(values, values - 0.2, values + 0.2)
    assert wide == []  # the same point estimates, but the intervals overlap: no supported change


# ---------------------------------------------------------------- references


def test_rsa_pairs_and_paired_replicates():
    torch.manual_seed(0)
    tasks = make_tasks(("depth",))
    nets = {}
    for name, seed in (("a", 0), ("b", 1), ("c", 2)):
        torch.manual_seed(seed)
        nets[name] = build_model("single_task", tasks, backbone_options=WIDTHS)
    images = torch.rand(10, 3, 64, 64)
    every = affinity.rsa_per_scale(nets, images, bootstrap=15, seed=3, replicates=True)
    only = affinity.rsa_per_scale(nets, images, bootstrap=15, seed=3, pairs=[("a", "c")], replicates=True)
    assert list(zip(only["task_a"], only["task_b"], strict=True)) == [("a", "c")] * 4
    chosen = every[(every.task_a == "a") & (every.task_b == "c")].reset_index(drop=True)
    # the same images, bootstrap count and seed: the same resamples, so the same replicates
    for x, y in zip(chosen["replicates"], only["replicates"], strict=True):
        assert len(x) == 15 and np.allclose(x, y)
    assert np.allclose(chosen["rsa"], only["rsa"])
    # and the values are rdm_similarity's Spearman correlations
    features = {n: affinity.scale_features(m, images) for n, m in nets.items()}
    matrix = affinity.rdm_similarity({n: affinity.rdm(f[2]) for n, f in features.items()})
    assert chosen.loc[2, "rsa"] == pytest.approx(matrix.loc["a", "c"])
    with pytest.raises(ValueError, match="not among"):
        affinity.rsa_per_scale(nets, images, bootstrap=0, pairs=[("a", "z")])


def test_initial_model_is_the_network_fit_starts_from(monkeypatch):
    from mtl_core import train

    config = TrainConfig(model="single_task", tasks=("depth",), num_train=16, num_val=8, epochs=1,
                         batch_size=8, backbone_options={"widths": [8, 16, 24, 32]}, augment=False)
    built = []
    real = train.build_model

    def keep_a_copy(*args, **kwargs):
        model = real(*args, **kwargs)
        built.append(copy.deepcopy(model.state_dict()))
        return model

    monkeypatch.setattr(train, "build_model", keep_a_copy)
    train.fit(config, progress=False)
    start = affinity.initial_model(config).state_dict()
    assert start.keys() == built[0].keys()
    assert all(torch.equal(start[k], built[0][k]) for k in start)
    # another task (or seed) starts elsewhere: untrained networks are not copies of each other
    other = affinity.initial_model(TrainConfig(**{**config.to_dict(), "tasks": ("normals",)})).state_dict()
    stem = next(k for k in start if k.startswith("backbone.") and k.endswith("weight"))
    assert not torch.equal(start[stem], other[stem])


def _rsa_rows(values: dict, replicate_shift: float = 0.0, n: int = 40) -> pd.DataFrame:
    """rsa_per_scale-like rows {(scale, a, b): value}, replicates = value + the same noise everywhere."""
    noise = np.random.default_rng(0).normal(0, 0.01, n)
    return pd.DataFrame([{"scale": s, "task_a": a, "task_b": b, "rsa": v, "low": v - 0.02, "high": v + 0.02,
                          "replicates": v + replicate_shift + noise} for (s, a, b), v in values.items()])


def test_rsa_references_place_pairs_between_floor_and_ceiling():
    rsa = _rsa_rows({(0, "x", "y"): 0.8, (0, "x", "z"): 0.52, (1, "x", "y"): 0.6})
    untrained = _rsa_rows({(0, "x", "y"): 0.45, (0, "x", "z"): 0.55, (1, "x", "y"): 0.6})
    same = _rsa_rows({(0, "x", "x"): 0.9, (0, "y", "y"): 1.0, (1, "x", "x"): 0.6})
    table = affinity.rsa_references(rsa, untrained, same).set_index(["scale", "pair"])
    top = table.loc[(0, "x–y")]
    assert top["floor"] == pytest.approx(0.5) and top["ceiling"] == pytest.approx(0.95)
    assert top["relative"] == pytest.approx((0.8 - 0.5) / (0.95 - 0.5))
    assert top["relative_low"] <= top["relative"] <= top["relative_high"]
    assert top["above_floor"] and top["room"]
    low = table.loc[(0, "x–z")]  # 0.52 against a floor of 0.5: the paired noise is 0, so it clears it
    assert low["above_floor"] and low["relative"] == pytest.approx(0.02 / 0.45)
    flat = table.loc[(1, "x–y")]  # ceiling = floor = RSA: nothing to place it between
    assert not flat["room"] and np.isnan(flat["relative"]) and not flat["above_floor"]
    assert "not separable" in flat["verdict"]


def _probe_records():
    """Two scales, 4 steps: cross-task cosines and each task's cosine with itself on two batches."""
    rows = []
    for step, d in zip((1, 2, 3, 4), (-0.02, 0.0, 0.01, 0.01), strict=True):
        for s in (0, 1):
            rows.append({"step": step, "scale": s, "kind": "cosine", "task_a": "a", "task_b": "b",
                         "value": (0.1 if s == 0 else 0.5) + d})
            for t, c in (("a", 0.64), ("b", 0.25)):
                rows.append({"step": step, "scale": s, "kind": "cosine_same_task", "task_a": t, "task_b": t,
                             "value": c + d})
    return pd.DataFrame(rows)


def test_step_bootstrap_and_cosine_references():
    records = _probe_records()
    measured = affinity.step_bootstrap(records, kinds=("cosine", "cosine_same_task"), bootstrap=100)
    row = measured.query("kind == 'cosine' and scale == 0").iloc[0]
    assert row["value"] == pytest.approx(0.1) and row["low"] <= row["value"] <= row["high"]
    same_a = measured.query("kind == 'cosine_same_task' and scale == 0 and task_a == 'a'").iloc[0]
    # every row is resampled with the same steps: the gap between two rows has no resampling noise here
    assert np.allclose(same_a["replicates"] - row["replicates"], 0.54)
    refs = affinity.cosine_references(measured).set_index(["scale", "pair"])
    assert refs.loc[(0, "a–b"), "reference"] == pytest.approx(np.sqrt(0.64 * 0.25))
    assert refs.loc[(0, "a–b"), "relative"] == pytest.approx(0.1 / 0.4)
    # 0.1 lies well below the same-task reference 0.4: the tasks differ beyond batch noise
    assert refs.loc[(0, "a–b"), "beyond_noise"] and refs.loc[(0, "a–b"), "sign_clear"]
    # 0.5 is above it: as aligned as the tasks are with themselves on another batch
    assert not refs.loc[(1, "a–b"), "beyond_noise"]
    with pytest.raises(ValueError, match="no measurement"):
        affinity.step_bootstrap(records, kinds=("lookahead",))


# ---------------------------------------------------------------- task grouping


def test_pair_splits_scores_and_the_best_split():
    splits = affinity.pair_splits(("semseg", "depth", "normals", "edge"))
    assert [affinity.split_name(s) for s in splits] == ["semseg + depth / normals + edge",
                                                        "semseg + normals / depth + edge",
                                                        "semseg + edge / depth + normals"]
    assert len(affinity.pair_splits("abcdef")) == 15
    with pytest.raises(ValueError, match="even"):
        affinity.pair_splits("abc")
    values = {("semseg", "depth"): 1.0, ("normals", "edge"): 2.0, ("semseg", "normals"): 0.5,
              ("edge", "depth"): 0.5, frozenset(("semseg", "edge")): 0.0, ("depth", "normals"): 4.0}
    scores = affinity.split_scores(values, splits)
    assert scores == {"semseg + depth / normals + edge": 3.0, "semseg + normals / depth + edge": 1.0,
                      "semseg + edge / depth + normals": 4.0}
    noise = np.random.default_rng(0).normal(0, 0.1, 50)
    clear = affinity.best_split(scores, {k: v + noise for k, v in scores.items()})
    assert clear["best"] == "semseg + edge / depth + normals" and clear["separable"]
    assert clear["runner_up"] == "semseg + depth / normals + edge"
    wide = affinity.best_split(scores, {k: v + 10 * np.random.default_rng(i).normal(0, 1, 50)
                                        for i, (k, v) in enumerate(scores.items())})
    assert wide["best"] == clear["best"] and not wide["separable"]
    assert not affinity.best_split(scores)["separable"]  # no replicates: nothing is told apart


def test_reference_and_grouping_figures_are_saved(tmp_path):
    rsa = _rsa_rows({(0, "x", "y"): 0.8, (1, "x", "y"): 0.7})
    untrained = _rsa_rows({(0, "x", "y"): 0.5, (1, "x", "y"): 0.6})
    same = _rsa_rows({(0, "x", "x"): 0.9, (1, "x", "x"): 0.6})
    fig = affinity.plot_rsa_references(affinity.rsa_references(rsa, untrained, same), strides=[2, 4],
                                       save_to=tmp_path / "r.png")
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["1/2", "1/4"]
    measured = affinity.step_bootstrap(_probe_records(), kinds=("cosine", "cosine_same_task"), bootstrap=20)
    fig = affinity.plot_cosines_with_reference(measured, save_to=tmp_path / "c.png")
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["two tasks, one batch", "one task, two batches (reference)"]
    table = pd.DataFrame({"Δ (%)": [1.0, -0.5], "Δ (%) low": [0.5, -1.0], "Δ (%) high": [1.5, 0.0],
                          "RSA": [0.2, 0.1]}, index=["s1", "s2"])
    fig = affinity.plot_split_scores(table, save_to=tmp_path / "s.png")
    assert [ax.get_title() for ax in fig.axes] == ["Δ (%)", "RSA"]
    assert all((tmp_path / f).stat().st_size > 0 for f in ("r.png", "c.png", "s.png"))
