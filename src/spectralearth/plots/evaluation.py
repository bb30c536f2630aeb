"""Figures of the downstream datasets and evaluations: mean spectrum per class, confusion
matrix, per-class scores."""

from __future__ import annotations

from pathlib import Path

from spectralearth.plots.figure import save, use_agg


def class_spectra(
    means: dict[str, list[float]], wavelengths, out_png: Path, title: str = ""
) -> Path:
    """Mean reflectance spectrum per class, the removed water-vapour ranges shaded."""
    use_agg()
    import matplotlib.pyplot as plt
    import numpy as np

    from spectralearth.bands import WATER_VAPOUR_RANGES_NM, in_water_vapour

    wl = np.asarray(wavelengths, dtype=float)
    fig, ax = plt.subplots(figsize=(7.0, 3.6), dpi=90)
    for lo, hi in WATER_VAPOUR_RANGES_NM:
        ax.axvspan(
            lo, hi, color="0.85", zorder=0, label="removed (water vapour)" if lo < 1500 else None
        )
    for name, spectrum in means.items():
        y = np.asarray(spectrum, dtype=float) / 10000.0
        y = np.where(in_water_vapour(wl), np.nan, y)  # no line across the removed ranges
        ax.plot(wl, y, lw=1.2, label=str(name))
    ax.set_xlabel("wavelength (nm)")
    ax.set_ylabel("reflectance")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title(title or "mean spectrum per class", fontsize=9)
    fig.tight_layout()
    return save(fig, Path(out_png))


def confusion_matrix_plot(cm, classes: list[str], out_png: Path, title: str = "") -> Path:
    """Row-normalised confusion matrix (rows = truth), with the pixel counts' shares."""
    use_agg()
    import matplotlib.pyplot as plt
    import numpy as np

    cm = np.asarray(cm, dtype=float)
    share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    k = len(cm)
    side = max(4.0, 0.45 * k + 2.0)
    fig, ax = plt.subplots(figsize=(side + 1.0, side), dpi=90)
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    labels = [str(c) for c in classes][:k] + [str(i) for i in range(len(classes), k)]
    ax.set_xticks(range(k), labels, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(k), labels, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("truth")
    if k <= 20:
        for i in range(k):
            for j in range(k):
                if share[i, j] >= 0.005:
                    ax.text(
                        j,
                        i,
                        f"{share[i, j]:.2f}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if share[i, j] > 0.6 else "black",
                    )
    fig.colorbar(im, ax=ax, fraction=0.046, label="share of the true class")
    ax.set_title(title or "confusion matrix", fontsize=9)
    fig.tight_layout()
    return save(fig, Path(out_png))


def per_class_bars(
    values: dict[str, list[float]],
    classes: list[str],
    out_png: Path,
    title: str = "",
    ylabel: str = "IoU",
) -> Path:
    """Grouped bars per class, one group member per entry of ``values`` (model -> scores)."""
    use_agg()
    import matplotlib.pyplot as plt
    import numpy as np

    k = len(classes)
    n = max(1, len(values))
    width = 0.8 / n
    fig, ax = plt.subplots(figsize=(max(5.0, 0.5 * k * max(1, n / 2) + 2), 3.6), dpi=90)
    x = np.arange(k)
    for i, (name, scores) in enumerate(values.items()):
        ax.bar(x + (i - (n - 1) / 2) * width, np.nan_to_num(scores[:k]), width, label=name)
    ax.set_xticks(x, [str(c) for c in classes], rotation=45, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    if len(values) > 1:
        ax.legend(fontsize=8)
    ax.set_title(title or f"per-class {ylabel}", fontsize=9)
    fig.tight_layout()
    return save(fig, Path(out_png))
