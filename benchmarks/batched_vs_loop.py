"""Benchmark: training 64 seeds with ``lib.batched.train_batched`` vs a loop of ``lib.trainer.train``.

    OMP_NUM_THREADS=1 python benchmarks/batched_vs_loop.py            # the full benchmark
    OMP_NUM_THREADS=1 python benchmarks/batched_vs_loop.py --quick    # a smaller run

Configuration (defaults): M = 64 seeds, each with its own teacher problem (N = 8 samples of n = 4
tokens, D = 8, one head, Softmax kernel) and its own initialisation; every weight trainable; 200 GD
steps with lr = 0.01; float64 on the CPU; one thread.

Timing. The two methods are interleaved in ``rounds`` rounds (one batched run, then 1/rounds of the
seeds in the loop), so that both see the same conditions on a shared machine. The batched time is
the median over the rounds, the loop time the sum over all seeds. The ratio is taken on the process
CPU time (``time.process_time``), which other processes on the machine do not inflate; the wall-clock
ratio is printed too.

Exit status: 0 when the batched run is at least ``--min-ratio`` (15) times faster and every loss
curve and final weight agree with the loop's (relative difference <= 1e-10); 1 when the ratio is
too small; 2 when the results disagree.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.batched import BatchedAttentionLayer, train_batched  # noqa: E402
from lib.data import teacher_problem  # noqa: E402
from lib.model import WEIGHT_NAMES, AttentionLayer  # noqa: E402
from lib.trainer import GDConfig, train  # noqa: E402

MIN_RATIO = 15.0
TOLERANCE = 1e-10


@dataclass
class BenchmarkResult:
    """Times in seconds; ``*_cpu`` = process CPU time, ``*_wall`` = wall clock."""

    M: int
    steps: int
    loop_cpu: float
    loop_wall: float
    batched_cpu: float
    batched_wall: float
    max_loss_rel_diff: float
    max_weight_rel_diff: float
    statuses: dict[str, int]

    @property
    def ratio_cpu(self) -> float:
        return self.loop_cpu / self.batched_cpu

    @property
    def ratio_wall(self) -> float:
        return self.loop_wall / self.batched_wall

    @property
    def agree(self) -> bool:
        return self.max_loss_rel_diff <= TOLERANCE and self.max_weight_rel_diff <= TOLERANCE


def _rel_diff(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))


def run_benchmark(
    M: int = 64,
    N: int = 8,
    n: int = 4,
    D: int = 8,
    H: int = 1,
    kernel: str = "softmax",
    steps: int = 200,
    lr: float = 0.01,
    rounds: int = 4,
    seed: int = 0,
) -> BenchmarkResult:
    """Train M seeds both ways on the CPU in float64 and compare times and results (see the module doc)."""
    if M % rounds:
        raise ValueError(f"M = {M} must be a multiple of rounds = {rounds}")
    device = torch.device("cpu")
    problems = [teacher_problem(N, n, D, kernel=kernel, H=H, seed=seed + s, device=device) for s in range(M)]
    X = torch.stack([p.X for p in problems])
    Y = torch.stack([p.Y for p in problems])
    seeds = [10_000 + seed + s for s in range(M)]
    config = GDConfig(steps=steps, lr=lr)

    def new_layer(m: int) -> AttentionLayer:
        return AttentionLayer(D, H=H, kernel=kernel, seed=seeds[m], device=device)

    loop_losses: list[list[float]] = [[] for _ in range(M)]
    loop_weights: list[dict[str, torch.Tensor]] = [{} for _ in range(M)]
    loop_cpu = loop_wall = 0.0
    batched_cpu: list[float] = []
    batched_wall: list[float] = []
    batched_model = history = None
    per_round = M // rounds
    for r in range(rounds):
        model = BatchedAttentionLayer(M, D, H=H, kernel=kernel, seeds=seeds, device=device)
        c0, w0 = time.process_time(), time.perf_counter()
        history = train_batched(model, X, Y, config)
        batched_cpu.append(time.process_time() - c0)
        batched_wall.append(time.perf_counter() - w0)
        batched_model = model
        for m in range(r * per_round, (r + 1) * per_round):
            layer = new_layer(m)
            c0, w0 = time.process_time(), time.perf_counter()
            run = train(layer, problems[m].X, problems[m].Y, config)
            loop_cpu += time.process_time() - c0
            loop_wall += time.perf_counter() - w0
            loop_losses[m] = run.loss
            loop_weights[m] = {name: getattr(layer, name).detach() for name in WEIGHT_NAMES}

    loss_diff = 0.0
    weight_diff = 0.0
    for m in range(M):
        batched_run = history.run(m)
        if len(batched_run.loss) != len(loop_losses[m]):
            loss_diff = float("inf")
            continue
        loss_diff = max(loss_diff, _rel_diff(batched_run.loss, loop_losses[m]))
        for name in WEIGHT_NAMES:
            single = loop_weights[m][name]
            batched = getattr(batched_model, name)[m].detach()
            weight_diff = max(weight_diff, float((batched - single).abs().max() / single.abs().max()))
    statuses: dict[str, int] = {}
    for status in history.status:
        statuses[status] = statuses.get(status, 0) + 1
    return BenchmarkResult(
        M=M,
        steps=steps,
        loop_cpu=loop_cpu,
        loop_wall=loop_wall,
        batched_cpu=statistics.median(batched_cpu),
        batched_wall=statistics.median(batched_wall),
        max_loss_rel_diff=loss_diff,
        max_weight_rel_diff=weight_diff,
        statuses=statuses,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="16 seeds, 50 steps (a smoke test; no speed requirement)")
    parser.add_argument("--min-ratio", type=float, default=MIN_RATIO, help="required speed-up (default 15)")
    parser.add_argument("--kernel", default="softmax")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    kwargs = dict(M=16, steps=50) if args.quick else {}
    result = run_benchmark(kernel=args.kernel, **kwargs)
    print(f"{result.M} seeds x {result.steps} steps, kernel {args.kernel}, float64, CPU, 1 thread")
    print(f"  loop of lib.trainer.train : {result.loop_cpu:8.3f} s CPU  {result.loop_wall:8.3f} s wall")
    print(f"  lib.batched.train_batched : {result.batched_cpu:8.3f} s CPU  {result.batched_wall:8.3f} s wall")
    print(f"  speed-up                  : {result.ratio_cpu:8.1f} x CPU  {result.ratio_wall:8.1f} x wall")
    print(f"  max relative difference   : losses {result.max_loss_rel_diff:.1e}, "
          f"weights {result.max_weight_rel_diff:.1e} (tolerance {TOLERANCE:g})")
    print(f"  statuses                  : {result.statuses}")
    if not result.agree:
        print("FAIL: the batched results differ from the loop's")
        return 2
    if not args.quick and result.ratio_cpu < args.min_ratio:
        print(f"FAIL: speed-up {result.ratio_cpu:.1f} x < required {args.min_ratio:g} x")
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
