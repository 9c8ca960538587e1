"""Record the Pathfinder comparison of chapter 08 in a setting the model learns:
Softmax vs Gaussian attention, several seeds, Adam with warm-up.

    nice -n 10 python scripts/record_pathfinder.py            # all jobs, 2 processes
    python scripts/record_pathfinder.py --workers 1 --quick   # a tiny smoke test (not
    recorded)

One command, resumable: every job is an independent process with one torch thread
(joblib's process pool, ``lib.records.run_jobs``); a finished job writes
``.cache/records/pathfinder_learnable/<job>.json`` and is skipped when the command runs
again (when that folder is missing, the jobs of the committed record with the same
settings are taken from it). Jobs run in order: the main comparison (both kernels,
every seed, in the setting of ``SETTINGS``), then the probes, one Softmax run (seed 0)
per setting that was tried on the way (``PROBES``). When every job is done, the record
``chapters/recorded/pathfinder_learnable.json`` holds the settings, the hardware, the
wall time and, per job, the test curves on the whole test set (every ``eval_every``
steps), the mini-batch training loss (means over blocks of ``loss_block`` steps) and
the seconds spent training and evaluating.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import lib  # noqa: E402
import lib.minibatch as minibatch  # noqa: E402
from lib.classifier import TransformerClassifier  # noqa: E402
from lib.pathfinder import make_pathfinder  # noqa: E402
from lib.records import (  # noqa: E402
    carry_jobs, hardware_info, jobs_dir, run_jobs, save_record,
    write_json_atomic)

NAME = "pathfinder_learnable"
# Settings tried on the way, each a Softmax run (seed 0) of ``probe_steps`` steps with
# the main comparison's model and optimiser: pixel tokens of the hard images (as in
# the Long Range Arena), then patch tokens, then shorter solid curves.
PROBES = [
    dict(probe="pixels, hard, 16x16", resolution=16, patch=1, difficulty="hard"),
    dict(probe="4x4 patches, hard, 32x32", resolution=32, patch=4, difficulty="hard"),
    dict(probe="2x2 patches, hard, 16x16", resolution=16, patch=2, difficulty="hard"),
    dict(probe="2x2 patches, medium, 16x16", resolution=16, patch=2,
         difficulty="medium"),
]
SETTINGS = dict(
    resolution=16, patch=2, difficulty="easy", num_train=40_000, num_test=2_000,
    train_seed=1, test_seed=2, D=64, H=2, mlp_dim=128, num_layers=2, pooling="mean",
    gamma=None, optimizer="adam", lr=1e-3, betas=[0.9, 0.999], warmup_steps=300,
    decay="cosine", batch_size=32, steps=6_000, eval_every=250, eval_batch_size=500,
    loss_block=50, seeds=list(range(12)), kernels=["softmax", "gaussian"],
    probes=PROBES,
    probe_steps=3_000,
)
QUICK = dict(SETTINGS, num_train=256, num_test=64, steps=20, eval_every=10,
             warmup_steps=5, loss_block=5, seeds=[0], probes=PROBES[2:3],
             probe_steps=10)
SETTING_KEYS = ("resolution", "patch", "difficulty")


def jobs(settings: dict) -> list[dict]:
    """The main comparison (every kernel and seed), then one Softmax run per probe."""
    base = {k: settings[k] for k in SETTING_KEYS}
    main = [dict(base, kernel=k, seed=s, steps=settings["steps"], probe=None)
            for s in settings["seeds"] for k in settings["kernels"]]
    probes = [dict(p, kernel="softmax", seed=0, steps=settings["probe_steps"])
              for p in settings["probes"]]
    return main + probes


def job_name(job: dict) -> str:
    kind = "probe_" if job["probe"] else ""
    return (f"{kind}{job['difficulty']}_{job['resolution']}px_patch{job['patch']}_"
            f"{job['kernel']}_seed{job['seed']}")


def run_job(job: dict, *, settings: dict, out_path: Path) -> dict:
    """Train one model (one thread) and write its result to ``out_path``."""
    torch.set_num_threads(1)
    start = time.perf_counter()
    res, patch = job["resolution"], job["patch"]
    train, test = (make_pathfinder(settings[f"num_{part}"], resolution=res,
                                   seed=settings[f"{part}_seed"],
                                   difficulty=job["difficulty"])
                   for part in ("train", "test"))
    data_seconds = time.perf_counter() - start
    lib.set_seed(job["seed"])
    model = TransformerClassifier(
        vocab_size=None, input_dim=patch * patch, max_len=(res // patch) ** 2,
        D=settings["D"], H=settings["H"], mlp_dim=settings["mlp_dim"],
        num_layers=settings["num_layers"], kernel=job["kernel"],
        gamma=settings["gamma"], pooling=settings["pooling"], seed=job["seed"])
    config = minibatch.MinibatchConfig(
        optimizer=settings["optimizer"], lr=settings["lr"],
        betas=tuple(settings["betas"]), warmup_steps=settings["warmup_steps"],
        decay=settings["decay"], batch_size=settings["batch_size"], steps=job["steps"],
        eval_every=settings["eval_every"], eval_batch_size=settings["eval_batch_size"],
        seed=job["seed"])

    def report(state: minibatch.EvalState) -> None:  # a progress line per evaluation
        print(f"  {job_name(job)} step {state.step}/{job['steps']}: test acc "
              f"{state.test_acc:.3f}, {time.perf_counter() - start:.0f} s", flush=True)

    hist = minibatch.train_classifier(
        model, (train.as_sequences(patch), train.labels),
        (test.as_sequences(patch), test.labels), config, callbacks=[report])
    block = settings["loss_block"]
    losses = np.array(hist.train_loss[: len(hist.train_loss) // block * block])
    result = dict(
        job, status=hist.status, eval_steps=hist.eval_steps, test_acc=hist.test_acc,
        test_loss=hist.test_loss, train_loss_blocks=losses.reshape(-1, block).mean(1)
        .tolist(), steps_run=hist.steps_run, train_seconds=hist.seconds,
        data_seconds=data_seconds, wall_seconds=time.perf_counter() - start,
        hardware=hardware_info())
    write_json_atomic(out_path, result)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2,
                        help="worker processes (one thread each)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny smoke test (not recorded)")
    parser.add_argument("--collect", action="store_true",
                        help="run nothing; record the finished jobs (the main"
                        " comparison must be complete)")
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else SETTINGS
    work = jobs_dir(NAME, quick=args.quick)
    start_file = work / "settings.json"
    if not start_file.exists():
        start_file.write_text(json.dumps(settings, indent=1) + "\n")
    carried = {} if args.quick else carry_jobs(NAME, settings, work, job_name)
    todo = jobs(settings)
    n_main = len(settings["seeds"]) * len(settings["kernels"])
    if args.collect:
        done = [j for j in todo if (work / f"{job_name(j)}.json").exists()]
        if done[:n_main] != todo[:n_main]:
            raise SystemExit(
                "the main comparison is not complete; run without --collect first")
        todo = done
    results = run_jobs(
        todo, run_job, work, job_name, workers=args.workers, settings=settings,
        describe=lambda r: (f"{job_name(r)}: final test acc {r['test_acc'][-1]:.4f},"
                            f" {r['wall_seconds']:.0f} s"))
    sessions = json.loads((work / "sessions.json").read_text())
    if args.quick:
        print(f"quick run done in {sessions[-1]['wall_seconds']:.0f} s (not recorded)")
        return 0
    hw = dict(results[0]["hardware"], workers=args.workers, threads_per_worker=1)
    path = save_record(
        NAME, {"jobs": results, "sessions": sessions,
               "complete": len(todo) == len(jobs(settings))},
        settings=settings,
        # The sessions' wall times (an interrupted session logs none of its own).
        wall_seconds=carried.get("wall_seconds", 0.0)
        + sum(x["wall_seconds"] for x in sessions),
        hardware=hw)
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
