"""Benchmark: one training step of the real-task model against PyTorch's own Transformer encoder.

    OMP_NUM_THREADS=1 python benchmarks/step_time.py           # the full benchmark
    OMP_NUM_THREADS=1 python benchmarks/step_time.py --quick   # fewer steps

One training step = forward, cross-entropy, backward and optimizer update, float32, on the CPU with
the same thread count for every model (``--threads``, default 1). Two configurations, those of
chapters 07 and 08: IMDb (token ids, B = 32, L = 256, vocabulary 20,000, SGD with momentum 0.9,
padding masked) and Pathfinder 16 x 16 (pixels, B = 32, L = 256, Adam). Models: D = 64, H = 2,
MLP width 128, 2 pre-LN layers, mean pooling.

* ``softmax``, ``gaussian``: ``lib.classifier.TransformerClassifier`` (fused attention, the default).
* ``gaussian (plain)``: the same with ``model.fused = False`` (the reference attention, S formed).
* ``torch``: ``torch.nn.TransformerEncoder`` (pre-LN, batch-first, GELU, same sizes, same
  embedding, pooling and head), which uses the fused ``scaled_dot_product_attention``.

Timing: the models are interleaved in rounds (a few steps of each per round) so that all see the
same load on a shared machine; the time of a model is the median over rounds of the process CPU
time per step (``time.process_time``, which other processes do not inflate while we run on one
thread). FLOP limit: the matmul FLOPs of one step (``torch.utils.flop_counter``) divided by the
rate of a large (1024 x 1024) float32 matmul on the same threads; ``step / limit`` says how far a
step is from being matmul-bound.

Prints every ratio. Targets: Softmax / torch <= 1.0 and Gaussian / Softmax <= 1.2. Exit status 0
when both are met in every configuration, else 1 (the numbers are printed either way).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.classifier import TransformerClassifier  # noqa: E402

TARGET_TORCH = 1.0
TARGET_GAUSSIAN = 1.2
CONFIGS = {
    "IMDb": dict(B=32, L=256, vocab=20_000, optimizer="sgd"),
    "Pathfinder 16x16": dict(B=32, L=256, vocab=None, optimizer="adam"),
}


class TorchEncoderClassifier(nn.Module):
    """The same classifier with ``torch.nn.TransformerEncoder`` (pre-LN, batch-first) as encoder."""

    def __init__(
        self, vocab: int | None, L: int, D: int = 64, H: int = 2, mlp: int = 128
    ):
        super().__init__()
        self.vocab = vocab
        self.embed = nn.Embedding(vocab, D, padding_idx=0) if vocab else nn.Linear(1, D)
        self.pos = nn.Parameter(torch.randn(1, L, D) * 0.02)
        layer = nn.TransformerEncoderLayer(
            D, H, mlp, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(D)
        self.head = nn.Linear(D, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.vocab:
            mask = x != 0
            h = self.encoder(self.embed(x) + self.pos, src_key_padding_mask=~mask)
            w = mask.unsqueeze(-1).float()
            return self.head((self.norm(h) * w).sum(1) / w.sum(1).clamp_min(1.0))
        h = self.encoder(self.embed(x.unsqueeze(-1)) + self.pos)
        return self.head(self.norm(h).mean(1))


def make_inputs(cfg: dict, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch like the chapters': review lengths from 40 to L tokens (padded), or random pixels."""
    B, L = cfg["B"], cfg["L"]
    y = torch.randint(0, 2, (B,), generator=gen)
    if cfg["vocab"] is None:
        return (torch.rand(B, L, generator=gen) < 0.2).float(), y
    x = torch.randint(2, cfg["vocab"], (B, L), generator=gen)
    lengths = torch.randint(40, L + 1, (B,), generator=gen)
    x[torch.arange(L)[None, :] >= lengths[:, None]] = 0
    return x, y


def make_models(cfg: dict) -> dict[str, nn.Module]:
    kw = dict(vocab_size=cfg["vocab"], max_len=cfg["L"], seed=0)
    models = {
        "torch": TorchEncoderClassifier(cfg["vocab"], cfg["L"]),
        "softmax": TransformerClassifier(kernel="softmax", **kw),
        "gaussian": TransformerClassifier(kernel="gaussian", **kw),
        "gaussian (plain)": TransformerClassifier(kernel="gaussian", **kw),
    }
    models["gaussian (plain)"].fused = False
    return models


def make_step(model: nn.Module, cfg: dict, x: torch.Tensor, y: torch.Tensor):
    if cfg["optimizer"] == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    return step


def step_flops(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """Matmul FLOPs of one forward + backward pass, the attention products included.

    Counted on the plain attention (``model.fused = False``: explicit matmuls Q K^T and S V, which
    the counter sees; it does not count the fused CPU kernel), so the count is the matmul work the
    step must do whichever way it is computed."""
    fused, model.fused = model.fused, False
    counter = FlopCounterMode(display=False)
    try:
        with counter:
            F.cross_entropy(model(x), y).backward()
    finally:
        model.fused = fused
        model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def matmul_rate(n: int = 1024, repeats: int = 5) -> float:
    """Achieved FLOP/s of an n x n float32 matmul (best of ``repeats``)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n**3 / best


def _timed(fn) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def bench_config(name: str, cfg: dict, rounds: int, steps: int) -> dict[str, float]:
    x, y = make_inputs(cfg, torch.Generator().manual_seed(0))
    models = make_models(cfg)
    steppers = {k: make_step(m, cfg, x, y) for k, m in models.items()}
    for fn in steppers.values():  # warm-up
        fn(), fn()
    times: dict[str, list[float]] = {k: [] for k in steppers}
    for _ in range(rounds):
        for k, fn in steppers.items():
            times[k].append(_timed(lambda: [fn() for _ in range(steps)]) / steps)
    med = {k: statistics.median(v) for k, v in times.items()}
    flops = {k: step_flops(models[k], x, y) for k in ("softmax", "gaussian")}
    return {"times": med, "flops": flops}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and steps")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rounds, steps = (3, 2) if args.quick else (7, 4)
    rate = matmul_rate()
    print(
        f"torch {torch.__version__}, {args.threads} thread(s), float32; "
        f"large-matmul rate {rate / 1e9:.1f} GFLOP/s"
    )
    ok = True
    for name, cfg in CONFIGS.items():
        res = bench_config(name, cfg, rounds, steps)
        t = res["times"]
        print(
            f"\n{name} (B={cfg['B']}, L={cfg['L']}, {cfg['optimizer']}); ms per step"
            f" (median of {rounds} rounds x {steps} steps, CPU time):"
        )
        for k, v in t.items():
            print(f"  {k:<17} {1e3 * v:7.1f} ms")
        r_torch = t["softmax"] / t["torch"]
        r_gauss = t["gaussian"] / t["softmax"]
        r_plain = t["gaussian (plain)"] / t["gaussian"]
        print(
            f"  ratio Softmax / torch.nn.TransformerEncoder = {r_torch:.2f} (target <="
            f" {TARGET_TORCH})"
        )
        print(
            f"  ratio Gaussian / Softmax                    = {r_gauss:.2f} (target <="
            f" {TARGET_GAUSSIAN})"
        )
        print(f"  ratio Gaussian plain / Gaussian fused       = {r_plain:.2f}")
        for k in ("softmax", "gaussian"):
            limit = res["flops"][k] / rate
            print(
                f"  {k}: {res['flops'][k] / 1e9:.2f} GFLOP of matmuls per step (forward"
                f" and backward); FLOP limit {1e3 * limit:.1f} ms; step / FLOP limit ="
                f" {t[k] / limit:.1f}"
            )
        ok &= r_torch <= TARGET_TORCH and r_gauss <= TARGET_GAUSSIAN
    print("\nall targets met" if ok else "\nat least one target NOT met")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
