"""Tests of lib.one_layer_landscapes (the one-layer landscape study of chapter 06)."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
import torch

matplotlib.use("Agg")

from lib.data import teacher_problem  # noqa: E402
from lib.hessian import full_hessian  # noqa: E402
from lib.landscape import get_params, model_loss_fn, random_direction, slice_2d  # noqa
from lib.one_layer_landscapes import (  # noqa: E402
    CENTRES,
    ROUGHNESS_MEASURES,
    SolutionPlanes,
    format_roughness_table,
    hessian_spectra,
    interpolation_paths,
    landscape_student,
    landscape_verdict,
    loss_change,
    monotone_bumps,
    plot_interpolation,
    plot_roughness,
    plot_spectra,
    plot_two_stage,
    roughness_table,
    symmetry_check,
    trained_layers,
    two_stage_runs,
)

N, n, D = 2, 3, 3
TRAINABLE = ("W_Q", "W_K", "W_V")
SEEDS = [0, 1]
COLORS = {"softmax": "C0", "gaussian": "C1", "gaussian (two-stage)": "C2"}


@pytest.fixture(scope="module")
def study():
    problems = [teacher_problem(N, n, D, kernel="gaussian_normalized", seed=s,
                                device="cpu") for s in SEEDS]
    runs = two_stage_runs(problems, SEEDS, 20, 20, 0.15, TRAINABLE)
    trained = {key: trained_layers(runs, key, SEEDS, D) for key in CENTRES}
    return problems, runs, trained


def test_two_stage_runs_share_stage_one_and_descend(study):
    problems, runs, trained = study
    loss = runs["loss"]
    assert all(loss[k].shape == (41, 2) for k in CENTRES)
    # the two-stage branch and the Softmax run share the first 21 losses
    assert np.array_equal(loss["softmax"][:21], loss["gaussian (two-stage)"][:21])
    assert (loss["softmax"][-1] < loss["softmax"][0]).all()
    # the stored weights give the recorded final losses
    for key in CENTRES:
        layer, p = trained[key][1], problems[1]
        assert layer.kernel == ("softmax" if key == "softmax" else "gaussian")
        f = model_loss_fn(layer, p.X, p.Y)({})
        assert f == pytest.approx(loss[key][-1, 1], rel=1e-9)
    with pytest.raises(ValueError, match="one problem per seed"):
        two_stage_runs(problems, [0], 5, 5, 0.15, TRAINABLE)
    with pytest.warns(RuntimeWarning), pytest.raises(RuntimeError, match="GD failed"):
        two_stage_runs(problems, SEEDS, 50, 5, 1e6, TRAINABLE)  # diverges
    with pytest.raises(ValueError, match="key"):
        trained_layers(runs, "relu", SEEDS, D)


def test_student_is_seeded_and_kernel_independent():
    a, b = landscape_student("softmax", 3, D), landscape_student("gaussian", 3, D)
    assert torch.equal(a.W_Q, b.W_Q) and torch.equal(a.W_V, b.W_V)
    assert not torch.equal(a.W_Q, landscape_student("softmax", 4, D).W_Q)


def test_interpolation_paths_and_bumps(study):
    problems, _, trained = study
    starts = [landscape_student("softmax", s, D) for s in SEEDS]
    t = np.linspace(0, 1, 5)
    paths = interpolation_paths(starts, trained["softmax"], problems, TRAINABLE, t)
    p = problems[0]
    assert paths[0][0] == pytest.approx(model_loss_fn(starts[0], p.X, p.Y)({}))
    assert paths[0][-1] == pytest.approx(model_loss_fn(trained["softmax"][0], p.X,
                                                       p.Y)({}))
    assert monotone_bumps(np.array([[4.0, 3.0, 3.0, 1.0]]))[0] == 0.0
    assert monotone_bumps(np.array([[4.0, 2.0, 3.0, 1.0]]))[0] == pytest.approx(0.25)
    with pytest.raises(ValueError, match="shape"):
        monotone_bumps(np.ones(3))
    fig = plot_interpolation(t, {"softmax": paths}, t >= 0)
    assert len(fig.axes[1].lines) == 2 + 2  # two seeds, two marker lines
    matplotlib.pyplot.close(fig)


def test_solution_planes_match_slice_2d(study):
    problems, _, trained = study
    starts = [landscape_student("softmax", s, D) for s in SEEDS]
    plane = SolutionPlanes(trained, starts, problems, TRAINABLE, num=5)
    layer, p = trained["gaussian"][1], problems[1]
    centre = get_params(layer, TRAINABLE)
    d1, d2 = (random_direction(centre, seed=1000 * j + 1) for j in (1, 2))
    _, _, Z_ref = slice_2d(model_loss_fn(layer, p.X, p.Y), centre, d1, d2, num=5)
    alphas, Z = plane("gaussian", 1, "random")
    assert np.abs(Z - Z_ref).max() <= 1e-12 * np.abs(Z_ref).max()
    # the update plane at (-1, -1) puts W_Q and W_K back at the start
    _, Zu = plane("softmax", 0, "update", span=(-1.0, 1.0))
    back = trained["softmax"][0].copy()
    with torch.no_grad():
        back.W_Q.copy_(starts[0].W_Q)
        back.W_K.copy_(starts[0].W_K)
    assert Zu[0, 0] == pytest.approx(model_loss_fn(back, problems[0].X,
                                                   problems[0].Y)({}), rel=1e-10)
    with pytest.raises(ValueError, match="kind"):
        plane("softmax", 0, "hessian")


def test_symmetry_check_and_loss_change(study):
    problems, _, trained = study
    p = problems[0]
    gen = torch.Generator().manual_seed(0)
    E = torch.randn(D, D, generator=gen, dtype=torch.float64)
    change, rel, size = symmetry_check(trained["softmax"][0], p.X, p.Y, E)
    assert change < 1e-12 and rel < 1e-8 and size > 0
    # the Gaussian kernel is not invariant under a non-orthogonal A: the check shows it
    change_g, rel_g, _ = symmetry_check(trained["gaussian"][0], p.X, p.Y, E)
    assert change_g > 1e-6 and rel_g > 1e-6
    skew = E - E.T
    change_g, rel_g, _ = symmetry_check(trained["gaussian"][0], p.X, p.Y, skew)
    assert change_g < 1e-12 and rel_g < 1e-8
    layer = trained["softmax"][0]
    assert loss_change(layer, p.X, p.Y, layer.W_Q, layer.W_K) == 0.0
    assert loss_change(layer, p.X, p.Y, 2 * layer.W_Q, layer.W_K) > 0.0
    with pytest.raises(ValueError, match="trainable"):
        symmetry_check(layer, p.X, p.Y, E, ("W_Q",))


def test_hessian_spectra_and_figures(study):
    problems, runs, trained = study
    spectra, sym = hessian_spectra(trained["softmax"], problems, TRAINABLE)
    H = full_hessian(trained["softmax"][0], problems[0].X, problems[0].Y, TRAINABLE)
    assert np.allclose(spectra[0], torch.linalg.eigvalsh(H).numpy())
    assert len(sym) == 2 and all(v >= 0 for v in sym)
    fig = plot_spectra({"Softmax": (spectra[0], "C0")})
    assert len(fig.axes[0].lines[0].get_xdata()) == 3 * D * D
    matplotlib.pyplot.close(fig)
    fig = plot_two_stage(runs["loss"], 20, COLORS)
    assert len(fig.axes[0].lines) == 3  # two medians, the switch
    matplotlib.pyplot.close(fig)


def _table(value=1.0, minima=1):
    rows = {}
    for plane in ("random, [-1, 1]", "random, [-0.25, 0.25]", "update plane"):
        for m in ROUGHNESS_MEASURES:
            rows[plane, m] = np.full(3, float(minima) if m == "local minima" else value)
    rows["centre", "lambda_max"] = np.full(3, 2.0)
    rows["centre", "negative-curvature fraction"] = np.zeros(3)
    return rows


def test_landscape_verdict_holds_and_fails():
    planes = ["random, [-1, 1]", "random, [-0.25, 0.25]", "update plane"]
    table = {k: _table() for k in CENTRES}
    # the far-field pattern of the chapter: Gaussian non-convex, Softmax steep
    for k in ("gaussian", "gaussian (two-stage)"):
        table[k]["random, [-1, 1]", "non-convex fraction"][:] = 0.8
    table["softmax"]["random, [-1, 1]", "non-convex fraction"][:] = 0.1
    table["softmax"]["random, [-1, 1]", "relief"][:] = 5.0
    for k in CENTRES:
        table[k]["random, [-0.25, 0.25]", "non-convex fraction"][:] = 0.0
    checks = landscape_verdict(table, planes)
    assert len(checks) == 9 and all(ok for _, ok in checks), checks
    table["gaussian"] = _table(minima=2)  # two basins: several statements fail
    failed = [text for text, ok in landscape_verdict(table, planes) if not ok]
    assert any("local minima" in text for text in failed)


def test_roughness_table_format_and_plot(study):
    problems, _, trained = study
    starts = [landscape_student("softmax", s, D) for s in SEEDS]
    plane = SolutionPlanes(trained, starts, problems, TRAINABLE, num=5)
    spectra = {k: hessian_spectra(trained[k], problems, TRAINABLE)[0] for k in CENTRES}
    planes = {"random, [-1, 1]": ((-1.0, 1.0), "random"),
              "update plane": ((-1.25, 1.25), "update")}
    table = roughness_table(plane, spectra, CENTRES, 2, planes)
    assert table["softmax"]["centre", "lambda_max"].tolist() == [
        s[-1] for s in spectra["softmax"]]
    assert table["gaussian"]["update plane", "local minima"].shape == (2,)
    text = format_roughness_table(table, {k: k for k in CENTRES})
    assert text.startswith("median [min, max] over 2 seeds")
    assert "update plane: relief" in text
    fig = plot_roughness(table, COLORS, [("random, [-1, 1]", "relief")] * 6)
    assert len(fig.axes[0].lines) == 2 * len(CENTRES)
    matplotlib.pyplot.close(fig)
