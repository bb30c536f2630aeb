"""P3: cost of the spectral adapter in a Spec-ViT-S/4 training step.

The same ViT-S/4 (128 px, 1,024 tokens) trained one step (forward, backward, AdamW) on
202-band patches through the spectral adapter, and fed 128 channels directly (no adapter).
Steps alternate between the two so that load on the machine hits both alike; prints the
median step time of each and the ratio adapter / direct (goal <= 1.10x), beside the ratio
of their floating-point operations (torch's FlopCounterMode, attention counted through its
matmuls): the ratio any implementation reaches when both models run at the same efficiency.

    python benchmarks/bench_adapter.py [--batch 2] [--size 128] [--steps 4] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from spectralearth.models.vit import ViTEncoder

BANDS = 202


def step_fn(model: torch.nn.Module, x: torch.Tensor):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> float:
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        model(x).float().pow(2).mean().backward()
        opt.step()
        return time.perf_counter() - t0

    return step


def step_flops(model: torch.nn.Module, x: torch.Tensor) -> float:
    """FLOPs of one forward + backward on ``x``. The fused attention kernel is switched off
    while counting (the counter does not see inside the CPU's fused kernel)."""
    from torch.utils.flop_counter import FlopCounterMode

    attns = [b.attn for b in model.vit_core.blocks]
    fused = [a.fused_attn for a in attns]
    for a in attns:
        a.fused_attn = False
    try:
        with FlopCounterMode(display=False) as counter:
            model(x[:1]).float().pow(2).mean().backward()
    finally:
        for a, f in zip(attns, fused, strict=True):
            a.fused_attn = f
        model.zero_grad(set_to_none=True)
    return counter.get_total_flops() * x.shape[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    b, s = args.batch, args.size
    with_adapter = ViTEncoder(embed_dim=384, depth=12, num_heads=6, in_chans=BANDS)
    direct = ViTEncoder(embed_dim=384, depth=12, num_heads=6, in_chans=128, spectral_adapter=False)
    n_adapter = sum(p.numel() for p in with_adapter.spectral_adapter.parameters())
    inputs = {"adapter": torch.randn(b, BANDS, s, s), "direct": torch.randn(b, 128, s, s)}
    models = {"adapter": with_adapter.train(), "direct": direct.train()}
    flops = {k: step_flops(models[k], inputs[k]) for k in models}
    steps = {k: step_fn(models[k], inputs[k]) for k in models}
    times: dict[str, list[float]] = {k: [] for k in steps}
    for fn in steps.values():
        fn()  # warm-up (allocations, AdamW state)
    for _ in range(args.steps):
        for name, fn in steps.items():
            times[name].append(fn())
    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"Spec-ViT-S/4, batch {b} x {s} px ({(s // 4) ** 2} tokens), {args.steps} steps each, "
        f"{torch.get_num_threads()} threads; adapter {n_adapter:,} parameters"
    )
    for k in steps:
        print(
            f"{k:8s} median step {med[k]:.3f} s  ({b / med[k]:.2f} patches/s, "
            f"{flops[k] / 1e9:.1f} GFLOP, {flops[k] / med[k] / 1e9:.1f} GFLOP/s)"
        )
    print(f"ratio adapter/direct: {med['adapter'] / med['direct']:.2f}x (goal <= 1.10x)")
    print(f"FLOP ratio adapter/direct: {flops['adapter'] / flops['direct']:.3f}x (the floor)")


if __name__ == "__main__":
    main()
