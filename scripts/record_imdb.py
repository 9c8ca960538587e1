"""Record the IMDb comparison of chapter 07: Softmax vs Gaussian attention, several
seeds, SGD.

    nice -n 10 python scripts/record_imdb.py            # all jobs, 2 worker processes
    python scripts/record_imdb.py --workers 1 --quick   # a tiny smoke test (not
    recorded)

One command, resumable: every job (kernel, learning rate, seed) is an independent
process with one torch thread (joblib's process pool); a finished job writes
``.cache/records/imdb_sgd/<job>.json`` (a folder that ``make clean`` keeps) and is
skipped when the command runs again; when that folder is missing, the jobs of the
committed record (same settings) are taken from it, so a fresh clone resumes too. When
every job is done, the record
``chapters/recorded/imdb_sgd.json`` (``lib.records``) holds the settings, the hardware,
the wall time and, per job, the test curves (a fixed class-balanced subset of the test
set every
``eval_every`` steps), the final loss and accuracy on the **whole** 25,000-review test
set, the mini-batch training loss (means over blocks of ``loss_block`` steps) and the
seconds spent training and evaluating. Jobs run in order: the main comparison (both
kernels, every seed, the same learning rate) first, then the learning-rate sweep.
``--collect`` writes the record from the jobs finished so far (all of the main
comparison, and whatever part of the sweep is done).
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
from lib.imdb import imdb_tensors, load_imdb  # noqa: E402
from lib.records import (  # noqa: E402
    carry_jobs, hardware_info, jobs_dir, jobs_wall_time, run_jobs, save_record,
    write_json_atomic)  # noqa: E402
from lib.settings import repository_root  # noqa: E402

NAME = "imdb_sgd"
SETTINGS = dict(
    seq_len=64,
    vocab_size=20_000,
    min_freq=2,
    max_train=None,
    subset_seed=0,
    D=64,
    H=2,
    mlp_dim=128,
    num_layers=2,
    pooling="mean",
    dropout=0.0,
    gamma=None,
    optimizer="sgd",
    lr=0.01,
    momentum=0.9,
    batch_size=32,
    steps=3000,
    eval_every=250,
    eval_subset=1000,
    eval_batch_size=500,
    loss_block=50,
    seeds=[0, 1, 2, 3, 4],
    kernels=["softmax", "gaussian"],
    sweep_lrs=[0.03, 0.003],
    sweep_seeds=[0],
)
QUICK = dict(
    SETTINGS,
    seq_len=32,
    vocab_size=2000,
    max_train=512,
    steps=20,
    eval_every=10,
    eval_subset=200,
    loss_block=5,
    seeds=[0],
    sweep_lrs=[0.03],
)


def jobs(settings: dict) -> list[dict]:
    """The main comparison (every kernel and seed at ``lr``), then the learning-rate
    sweep."""
    main = [
        dict(kernel=k, lr=settings["lr"], seed=s)
        for s in settings["seeds"]
        for k in settings["kernels"]
    ]
    sweep = [
        dict(kernel=k, lr=lr, seed=s)
        for lr in settings["sweep_lrs"]
        for s in settings["sweep_seeds"]
        for k in settings["kernels"]
    ]
    return main + sweep


def job_name(job: dict) -> str:
    return f"{job['kernel']}_lr{job['lr']:g}_seed{job['seed']}"


def prepare_data(settings: dict, path: Path) -> None:
    """Tokenise once; workers load the tensors from ``path``."""
    data = load_imdb(progress=False)
    t = imdb_tensors(
        data,
        seq_len=settings["seq_len"],
        vocab_size=settings["vocab_size"],
        min_freq=settings["min_freq"],
        max_train=settings["max_train"],
        seed=settings["subset_seed"],
    )
    rng = np.random.default_rng(settings["subset_seed"])
    y = t.y_test.numpy()
    half = settings["eval_subset"] // 2
    subset = np.sort(
        np.concatenate(
            [rng.choice(np.flatnonzero(y == c), half, replace=False) for c in (0, 1)]
        )
    )
    torch.save(
        {
            "x_train": t.x_train,
            "y_train": t.y_train,
            "x_test": t.x_test,
            "y_test": t.y_test,
            "subset": torch.from_numpy(subset),
            "vocab_entries": len(t.vocab),
        },
        path,
    )


def run_job(job: dict, *, settings: dict, data_path: Path, out_path: Path) -> dict:
    """Train one model (one thread) and write its result to ``out_path``."""
    torch.set_num_threads(1)
    d = torch.load(data_path)
    eval_seconds = [0.0]
    plain_evaluate = minibatch.evaluate

    def timed_evaluate(*args, **kw):  # the trainer's evaluations, timed
        start = time.perf_counter()
        try:
            return plain_evaluate(*args, **kw)
        finally:
            eval_seconds[0] += time.perf_counter() - start

    minibatch.evaluate = timed_evaluate
    lib.set_seed(job["seed"])
    model = TransformerClassifier(
        vocab_size=d["vocab_entries"],
        max_len=settings["seq_len"],
        D=settings["D"],
        H=settings["H"],
        mlp_dim=settings["mlp_dim"],
        num_layers=settings["num_layers"],
        kernel=job["kernel"],
        gamma=settings["gamma"],
        dropout=settings["dropout"],
        pooling=settings["pooling"],
        seed=job["seed"],
    )
    sub = d["subset"]
    config = minibatch.MinibatchConfig(
        optimizer=settings["optimizer"],
        lr=job["lr"],
        momentum=settings["momentum"],
        batch_size=settings["batch_size"],
        steps=settings["steps"],
        eval_every=settings["eval_every"],
        eval_batch_size=settings["eval_batch_size"],
        seed=job["seed"],
    )
    start = time.perf_counter()

    def report(
        state: minibatch.EvalState,
    ) -> None:  # a progress line per evaluation, to the log
        print(
            f"  {job_name(job)} step {state.step}/{settings['steps']}: subset test acc "
            f"{state.test_acc:.3f}, {time.perf_counter() - start:.0f} s",
            flush=True,
        )

    hist = minibatch.train_classifier(
        model,
        (d["x_train"], d["y_train"]),
        (d["x_test"][sub], d["y_test"][sub]),
        config,
        callbacks=[report],
    )
    t_full = time.perf_counter()
    full_loss, full_acc = plain_evaluate(
        model, d["x_test"], d["y_test"], batch_size=settings["eval_batch_size"]
    )
    full_seconds = time.perf_counter() - t_full
    block = settings["loss_block"]
    losses = np.array(hist.train_loss[: len(hist.train_loss) // block * block]).reshape(
        -1, block
    )
    result = dict(
        job,
        status=hist.status,
        eval_steps=hist.eval_steps,
        test_acc=hist.test_acc,
        test_loss=hist.test_loss,
        full_test_acc=full_acc,
        full_test_loss=full_loss,
        train_loss_blocks=losses.mean(1).tolist(),
        steps_run=hist.steps_run,
        train_seconds=hist.seconds - eval_seconds[0],
        subset_eval_seconds=eval_seconds[0],
        full_eval_seconds=full_seconds,
        wall_seconds=time.perf_counter() - start,
        hardware=hardware_info(),
    )
    write_json_atomic(out_path, result)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--workers", type=int, default=2, help="worker processes (one thread each)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny smoke test (not recorded)"
    )
    parser.add_argument(
        "--collect",
        action="store_true",
        help=(
            "run nothing; record the finished jobs (the main comparison must be"
            " complete)"
        ),
    )
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else SETTINGS
    work = jobs_dir(NAME, quick=args.quick)
    (work / "settings.json").write_text(json.dumps(settings, indent=1) + "\n")
    carried = {} if args.quick else carry_jobs(NAME, settings, work, job_name)
    data_path = work / "tensors.pt"
    if not data_path.exists():
        print("tokenising the reviews ...", flush=True)
        prepare_data(settings, data_path)
    todo = jobs(settings)
    n_main = len(settings["seeds"]) * len(settings["kernels"])
    if args.collect:
        done = [j for j in todo if (work / f"{job_name(j)}.json").exists()]
        if len(done) < n_main or done[:n_main] != todo[:n_main]:
            raise SystemExit(
                "the main comparison is not complete; run without --collect first")
        todo = done
    results = run_jobs(
        todo, run_job, work, job_name, workers=args.workers, settings=settings,
        data_path=data_path, describe=lambda r: (
            f"{job_name(r)}: full test acc {r['full_test_acc']:.4f},"
            f" {r['wall_seconds']:.0f} s"))
    sessions = json.loads((work / "sessions.json").read_text())
    if args.quick:
        print(f"quick run done in {sessions[-1]['wall_seconds']:.0f} s (not recorded)")
        return 0
    d = torch.load(data_path)
    hw = dict(results[0]["hardware"], workers=args.workers, threads_per_worker=1)
    path = save_record(
        NAME,
        {
            "jobs": results,
            "sessions": sessions,
            "n_train": len(d["y_train"]),
            "n_test": len(d["y_test"]),
            "vocab_entries": d["vocab_entries"],
            "complete": len(todo) == len(jobs(settings)),
        },
        settings=settings,
        wall_seconds=jobs_wall_time(work, data_path, carried,
                                    [job_name(j) for j in todo]),
        hardware=hw,
    )
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
