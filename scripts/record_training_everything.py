"""Record the wide-embedding evidence of the chapter on training everything into
chapters/recorded/training_everything.json.

    PYTHONPATH=. python scripts/record_training_everything.py

* threshold: all four weight matrices trained, N = n = 4, H = 1 (threshold D = Nn/H =
  16), D = 8, 12, 16, 20, four seeds per kernel, random targets; budget-independent
  outcomes (lib.outcomes: GD, then 300 monotone Levenberg-Marquardt steps);
* containment: the ratio of the two sides of the containment condition at initialization
  (lib.containment), N = n = 4, H = 2, D = 16, 32, 64, attention scale 1 (Softmax) or
  D^(-1/4) (Gaussian), four seeds.
The scorecard page reads it (lib.scorecard).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from lib.batched import BatchedAttentionLayer, per_model_loss
from lib.containment import (
    attention_gradient_ratio,
    b_derivative_norm,
    containment_ratio,
)
from lib.data import stacked_random_problems
from lib.outcomes import run_to_outcome
from lib.theory import batched_gram_extremes

OUT = (
    Path(__file__).resolve().parent.parent
    / "chapters"
    / "recorded"
    / "training_everything.json"
)
ALL = ("W_Q", "W_K", "W_V", "W_O")
SEEDS = range(4)


def scale(kernel: str, D: int) -> float:
    return 1.0 if kernel == "softmax" else D**-0.25


def main() -> None:
    t0 = time.time()
    record = {
        "description": __doc__.strip().splitlines()[0],
        "threshold": [],
        "containment": [],
    }
    for D in (8, 12, 16, 20):
        X, Y = stacked_random_problems(SEEDS, 4, 4, D, device="cpu")
        for kernel in ("softmax", "gaussian"):
            model = BatchedAttentionLayer(
                len(SEEDS),
                D,
                kernel=kernel,
                init="orthogonal",
                device="cpu",
                qk_scale=scale(kernel, D),
                seeds=[100 + s for s in SEEDS],
            )
            o = run_to_outcome(
                model, X, Y, ALL, gd_steps=100, iterations=300, check_hessian=False
            )
            record["threshold"].append(
                {
                    "N": 4,
                    "n": 4,
                    "H": 1,
                    "D": D,
                    "kernel": kernel,
                    "labels": o.label.tolist(),
                    "final_ratio": (o.f_end / o.f0).tolist(),
                    "parameters": 4 * D * D,
                    "equations": 16 * D,
                }
            )
            print(
                f"threshold D={D} {kernel}: {o.counts()} {time.time() - t0:.0f} s",
                flush=True,
            )
    for D in (16, 32, 64):
        X, Y = stacked_random_problems(SEEDS, 4, 4, D, device="cpu")
        for kernel in ("softmax", "gaussian"):
            model = BatchedAttentionLayer(
                len(SEEDS),
                D,
                H=2,
                kernel=kernel,
                init="orthogonal",
                device="cpu",
                qk_scale=scale(kernel, D),
                seeds=[1000 + s for s in SEEDS],
            )
            with torch.no_grad():
                lam0, f0 = batched_gram_extremes(model, X)[0], per_model_loss(
                    model, X, Y
                )
            ratio = containment_ratio(
                lam0,
                f0,
                1.0,
                b_derivative_norm(model, X, iters=20),
                attention_gradient_ratio(model, X, Y),
                4,
            )["ratio"]
            record["containment"].append(
                {
                    "N": 4,
                    "n": 4,
                    "H": 2,
                    "D": D,
                    "kernel": kernel,
                    "ratio": np.asarray(ratio).tolist(),
                }
            )
    record["wall_seconds"] = time.time() - t0
    OUT.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {OUT} in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
