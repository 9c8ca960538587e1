"""Tests of lib.scorecard: the page is current with the records, and the rules decide as
stated."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lib.scorecard import VERDICTS, claims, render_page

ROOT = Path(__file__).resolve().parent.parent


def test_page_is_generated_from_the_records():
    page = (ROOT / "scorecard.md").read_text(encoding="utf-8")
    assert (
        page == render_page()
    ), "scorecard.md is out of date: run `python -m lib.scorecard > scorecard.md`"


def test_every_verdict_is_known_and_every_claim_has_evidence():
    for c in claims():
        assert (
            c.verdict in VERDICTS
            and c.evidence
            and c.section[0].startswith("chapters/")
        )


def _attention_record(only_s: int, only_g: int, p: float, soft_traps: int) -> dict:
    cell = {
        "N": 2,
        "n": 4,
        "D": 16,
        "M": 10,
        "scale": 1.0,
        "labels_x10": {"softmax": ["reached"] * 10, "gaussian": ["reached"] * 10},
        "budget_x10": {
            "softmax": {"counts": {}, "hessian_kinds": {"local min": soft_traps}},
            "gaussian": {
                "paired": {"only_reference": only_s, "only_this": only_g, "p_value": p}
            },
        },
    }
    return {"cells": [cell]}


@pytest.mark.parametrize(
    "only_s, only_g, p, verdict",
    [
        (0, 9, 0.004, "reproduced"),
        (9, 0, 0.004, "not reproduced"),
        (2, 3, 1.0, "not reproduced"),
    ],
)
def test_gaussian_rule(tmp_path, only_s, only_g, p, verdict):
    (tmp_path / "attention_only.json").write_text(
        json.dumps(_attention_record(only_s, only_g, p, 0))
    )
    found = {c.claim: c for c in claims(tmp_path)}
    gaussian = next(c for k, c in found.items() if "much more favourably" in k)
    assert gaussian.verdict == verdict
    traps = next(c for k, c in found.items() if "suboptimal local" in k)
    assert traps.verdict == "not reproduced"  # no Softmax trap in the record


def test_missing_records_and_fields_are_not_testable(tmp_path):
    (tmp_path / "imdb_sgd.json").write_text(json.dumps({"jobs": []}))
    found = claims(tmp_path)
    assert all(c.verdict == "not testable here" for c in found)
    imdb = next(c for c in found if c.claim.startswith("IMDb"))
    assert "lacks a field" in imdb.evidence


@pytest.mark.parametrize(
    "gap, final_acc, verdict",
    [(0.05, 0.8, "reproduced"), (0.0, 0.8, "not reproduced"),
     (-0.05, 0.8, "not reproduced"), (0.03, 0.5, "not testable here")],
)
def test_pathfinder_rule(tmp_path, gap, final_acc, verdict):
    jobs = []
    for seed, noise in enumerate((-0.002, 0.0, 0.002)):
        for kernel, sign in (("softmax", 0.0), ("gaussian", 1.0)):
            acc = [0.5, 0.6 + sign * gap + noise, final_acc + sign * gap + noise]
            jobs.append(dict(kernel=kernel, seed=seed, probe=None,
                             eval_steps=[0, 250, 500], test_acc=acc,
                             test_loss=[0.7, 1.2 - acc[1], 1.2 - acc[2]]))
    jobs.append(dict(kernel="softmax", seed=0, probe="pixels", eval_steps=[0, 500],
                     test_acc=[0.5, 0.5], test_loss=[0.7, 0.7]))  # not paired
    rec = {"settings": {"difficulty": "easy", "resolution": 16, "num_test": 2000},
           "jobs": jobs}
    (tmp_path / "pathfinder_learnable.json").write_text(json.dumps(rec))
    found = next(c for c in claims(tmp_path) if c.claim.startswith("Pathfinder"))
    assert found.verdict == verdict, found.evidence
    if verdict != "not testable here":
        assert "3 paired seeds" in found.evidence and "easy images" in found.evidence


def _imdb_record(gap_final: float, gap_early: float) -> dict:
    """Three paired seeds; the Gaussian model is ahead by gap_early at the first
    evaluation after step 0 and by gap_final at the end (noise +-0.002 by seed)."""
    jobs = []
    for seed, noise in enumerate((-0.002, 0.0, 0.002)):
        for kernel, sign in (("softmax", 0.0), ("gaussian", 1.0)):
            acc = [0.5, 0.6 + sign * gap_early + noise, 0.8 + sign * gap_final + noise]
            jobs.append(dict(
                kernel=kernel, lr=0.01, seed=seed, eval_steps=[0, 250, 3000],
                test_acc=acc, test_loss=[0.7, 1.2 - acc[1], 1.2 - acc[2]],
                full_test_acc=acc[2], full_test_loss=1.2 - acc[2]))
    return {"settings": {"lr": 0.01}, "jobs": jobs}


@pytest.mark.parametrize(
    "gap_final, gap_early, verdict",
    [(0.05, 0.05, "reproduced"), (0.05, 0.0, "reproduced with conditions"),
     (0.0, 0.05, "not reproduced"), (-0.05, 0.05, "not reproduced")],
)
def test_imdb_rule(tmp_path, gap_final, gap_early, verdict):
    rec = _imdb_record(gap_final, gap_early)
    (tmp_path / "imdb_sgd.json").write_text(json.dumps(rec))
    imdb = next(c for c in claims(tmp_path) if c.claim.startswith("IMDb"))
    assert imdb.verdict == verdict, imdb.evidence
    assert "3 paired seeds" in imdb.evidence
