"""Figures of pretraining: the loss curve, with what it shows written on it.

A self-supervised loss does not read like a supervised one. MoCo's InfoNCE loss is measured
against a memory bank of K keys that starts as random unit vectors (lightly's
``MemoryBankModule``): random keys are easy negatives, so the loss starts low and *rises*
while real keys replace them, over the first ceil(K / B) steps (B keys enqueued per step).
Only after that does it fall when the encoder learns; its chance level, every key equally
similar, is ln(K + 1). The curve marks both and says so in its caption.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from spectralearth.names import DINO, MAE, MOCO
from spectralearth.plots.figure import save, use_agg

_READINGS = {
    DINO: "DINO: cross-entropy between the teacher's and the student's outputs; the teacher "
    "follows the student, so the loss need not fall steadily.",
    MAE: "MAE: mean squared error of the masked patches' reconstruction (normalised "
    "reflectance): lower is better.",
}
_GENERIC = (
    "Self-supervised training loss per step. A MoCo loss rises while its memory bank fills "
    "with real keys: read it after the bank is full."
)


def memory_bank_fill_steps(memory_bank_size: int, batch_size: int) -> int:
    """Steps until a MoCo memory bank of ``memory_bank_size`` keys holds only real keys,
    ``batch_size`` keys being enqueued per step."""
    return math.ceil(int(memory_bank_size) / max(1, int(batch_size)))


def loss_caption(
    method: str | None,
    steps: int,
    memory_bank_size: int | None = None,
    batch_size: int | None = None,
) -> str:
    """What the loss curve of ``method`` shows, in words (the figure's caption)."""
    if method != MOCO:
        return _READINGS.get(method, _GENERIC)
    if not memory_bank_size or not batch_size:
        return (
            "MoCo: InfoNCE loss against a memory bank of keys. It rises while the bank, "
            "started as random vectors (easy negatives), fills with real keys; read it after."
        )
    fill = memory_bank_fill_steps(memory_bank_size, batch_size)
    chance = math.log(memory_bank_size + 1)
    text = (
        f"MoCo: InfoNCE loss against a memory bank of {memory_bank_size} keys. The bank starts "
        "as random vectors (easy negatives), so the loss rises while real keys fill it "
        f"(the first {fill} steps at {batch_size} keys per step). After that, falling below "
        f"the chance level ln(K+1) = {chance:.2f} means the encoder tells the two dates of a "
        "location from other locations."
    )
    if steps < fill:
        text += (
            f" This run ({steps} steps) ends before the bank is full: the whole curve is "
            "the filling phase, and a rising loss is expected, not a failure."
        )
    return text


def loss_curve(
    losses: Sequence[float],
    out_png: Path,
    title: str = "",
    *,
    method: str | None = None,
    memory_bank_size: int | None = None,
    batch_size: int | None = None,
) -> Path:
    """Training loss per step, a moving average when the run is long, and a caption saying
    how to read it (:func:`loss_caption`, also in the PNG's ``Description``).

    For MoCo give ``memory_bank_size`` and ``batch_size`` (keys enqueued per logged step:
    the global micro-batch, ``batch_size / accumulate_grad_batches``): the figure shades the
    steps while the bank fills and draws the chance level ln(K + 1).
    """
    use_agg()
    import matplotlib.pyplot as plt
    import numpy as np

    y = np.asarray(losses, dtype=float)
    steps = np.arange(1, len(y) + 1)
    caption = loss_caption(method, len(y), memory_bank_size, batch_size)
    fig, ax = plt.subplots(figsize=(6.0, 4.2), dpi=90)
    ax.plot(steps, y, lw=1, alpha=0.6, label="loss")
    window = max(1, len(y) // 20)
    if window > 1:
        smooth = np.convolve(y, np.ones(window) / window, mode="valid")
        ax.plot(np.arange(window, len(y) + 1), smooth, lw=2, label=f"mean of {window}")
    if method == MOCO and memory_bank_size and batch_size:
        fill = memory_bank_fill_steps(memory_bank_size, batch_size)
        ax.axvspan(0.5, min(fill, max(len(y), 1)) + 0.5, color="0.9", zorder=0,
                   label=f"memory bank filling ({fill} steps)")  # fmt: skip
        ax.axhline(math.log(memory_bank_size + 1), color="0.4", ls="--", lw=1,
                   label=f"chance ln(K+1) = {math.log(memory_bank_size + 1):.2f}")  # fmt: skip
    if len(y) == 0:
        ax.text(0.5, 0.5, "no training step", ha="center", va="center", transform=ax.transAxes)
    else:
        ax.legend(fontsize=7)
    ax.set_xlabel("training step")
    ax.set_ylabel("training loss")
    ax.grid(alpha=0.3)
    ax.set_title(title or "pretraining loss", fontsize=9)
    fig.text(0.01, 0.01, _wrap(caption, 110), fontsize=6.5, va="bottom", ha="left")
    fig.tight_layout(rect=(0, 0.03 + 0.028 * _wrap(caption, 110).count("\n"), 1, 1))
    return save(fig, Path(out_png), caption=caption)


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width))
