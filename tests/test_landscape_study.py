"""lib.landscape_study on a tiny task: record layout, slice centre = loss, plots,
tables, HVP check."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from lib.classifier import TransformerClassifier  # noqa: E402
from lib.landscape import roughness  # noqa: E402
from lib.landscape_study import (  # noqa: E402
    MEASURES,
    comparison_table,
    describe,
    hvp_relative_error,
    jsonable,
    landscape_study,
    measure_values,
    medians,
    plot_measures,
    plot_slices,
)

CFG = dict(
    optimizer="sgd",
    lr=0.05,
    momentum=0.9,
    batch_size=8,
    stage1_steps=4,
    stage2_steps=2,
    eval_examples=8,
)
LAND = dict(grid=5, span=0.5, direction_seeds=[0, 1], lanczos_iters=6)


def _task():
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(1, 20, (48, 6), generator=gen)
    y = (x[:, 0] > 10).long()
    return (x[:32], y[:32]), (x[32:], y[32:])


def make_model(seed):
    return TransformerClassifier(
        vocab_size=20, max_len=6, D=8, H=2, mlp_dim=8, seed=seed
    )


def test_study_record_and_views():
    train, test = _task()
    rec, models, (Xe, ye) = landscape_study(make_model, train, test, CFG, LAND)
    assert set(rec["kernels"]) == {"softmax", "gaussian"} and Xe.shape == (8, 6)
    c = LAND["grid"] // 2
    for k, r in rec["kernels"].items():
        Z = np.asarray(r["Z"])
        assert Z.shape == (2, 5, 5) and np.isfinite(Z).all()
        assert np.all(Z[:, c, c] == r["center_loss"])
        assert len(r["roughness"]) == 2 and np.isfinite(r["top_eig"])
        assert measure_values(rec, k, "laplacian").shape == (2,)
    m = medians({"toy": rec})
    assert set(m) == {("toy", key) for key in (*MEASURES, "top_eig")}
    same = medians({"toy": rec}, view=lambda Z: Z)
    assert all(np.isclose(same[key], m[key]).all() for key in m)
    inner = medians({"toy": rec}, view=lambda Z: Z[1:-1, 1:-1])
    grid = np.asarray(rec["kernels"]["gaussian"]["Z"][0])[1:-1, 1:-1]
    assert inner["toy", "laplacian"][1] == np.median(
        [
            roughness(np.asarray(Z)[1:-1, 1:-1])["laplacian"]
            for Z in rec["kernels"]["gaussian"]["Z"]
        ]
    )
    assert grid.shape == (3, 3)
    table = comparison_table({"toy": rec}, {"toy": "Toy task"})
    assert len(table.rows) == 7 and table.header[1] == "Toy, Softmax"
    text = describe(rec).splitlines()
    assert len(text) == 3 and text[0].startswith("test accuracy after stage 1")
    assert jsonable({"a": np.zeros(2), "b": np.float64(1.5)}) == {
        "a": [0.0, 0.0],
        "b": 1.5,
    }
    for fig in (
        plot_slices(rec, "t"),
        plot_measures({"toy": rec}, "t", {"toy": "Toy task"}),
    ):
        assert fig.axes
        plt.close(fig)


def test_hvp_matches_finite_differences():
    train, _ = _task()
    model = make_model(0).double()
    assert hvp_relative_error(model, train[0][:8], train[1][:8], eps=1e-4) < 1e-5
    before = [p.detach().clone() for p in model.parameters()]
    hvp_relative_error(model, train[0][:8], train[1][:8])
    assert all(
        torch.equal(a, b) for a, b in zip(before, model.parameters())
    )  # weights restored


def test_check_slices_and_printed_comparisons():
    import copy
    import json

    import pytest

    from lib.landscape_study import check_slices, compare_medians, median_verdicts

    train, test = _task()
    land = dict(LAND, lanczos_iters=20)  # enough for Lanczos to converge here
    rec, _, _ = landscape_study(make_model, train, test, CFG, land)
    labels = {"toy": "Toy task"}
    for records in ({"toy": rec}, json.loads(json.dumps({"toy": jsonable(rec)}))):
        report = check_slices(records, land, labels).splitlines()
        assert len(report) == 5 and report[0].startswith("Toy task, Softmax: 2 finite")
        assert report[-1].startswith("roughness recomputed")

    def broken(change):
        bad = copy.deepcopy(rec)
        change(bad["kernels"]["gaussian"])
        return {"toy": bad}

    def bump(r, i, j):
        r["Z"][0][i][j] += 1.0

    cases = [
        (lambda r: bump(r, 2, 2), r"toy, gaussian: \|centre - L\(theta\)\|"),
        (lambda r: r["Z"].pop(), r"toy, gaussian: grids must be finite of shape"),
        (lambda r: r.update(eig_converged=False), "Lanczos did not converge"),
        (lambda r: r["roughness"][0].update(num_local_minima=99), "local minima"),
        (lambda r: r["roughness"][0].update(laplacian=-1.0), "stored roughness"),
    ]
    for change, message in cases:
        with pytest.raises(ValueError, match=message):
            check_slices(broken(change), land, labels)
    with pytest.raises(ValueError, match="test label fraction"):
        check_slices({"toy": {**rec, "test_label_fraction": 1.0}}, land, labels)

    meds = {("toy", "laplacian"): (1.0, 2.0), ("toy", "top_eig"): (3.0, 3.0)}
    verdicts = median_verdicts(meds, labels).splitlines()
    assert verdicts[0].endswith("-> Gaussian higher") and "Laplacian" in verdicts[0]
    assert verdicts[1].endswith("-> Gaussian equal") and "lambda_max" in verdicts[1]
    other = {("toy", "laplacian"): (2.0, 1.0)}
    table = compare_medians(meds, other, labels, ("full", "half")).splitlines()
    assert table[0].endswith("full | half") and len(table) == 2  # top_eig left out
    assert table[1].endswith("(different ordering)")
    assert compare_medians(meds, meds, labels, ("a", "b")).endswith("(same ordering)")


def test_stage_config_reads_the_warm_up():
    from lib.landscape_study import stage_config

    cfg = dict(optimizer="adam", lr=1e-3, momentum=0.0, batch_size=16)
    plain = stage_config(cfg, 40)
    assert (plain.steps, plain.eval_every, plain.warmup_steps) == (40, 40, 0)
    warm = stage_config(dict(cfg, warmup_steps=10), 0)
    assert (warm.warmup_steps, warm.eval_every, warm.lr) == (10, 1, 1e-3)
    with pytest.raises(ValueError, match="warmup_steps"):
        stage_config(dict(cfg, warmup_steps=-1), 5)
