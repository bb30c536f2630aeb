"""Cheap representation probes for benchmarks/bench_ssl.py: pooled features of a downstream
split, a patch-level label (the dominant class), kNN and a linear probe, and the collapse
measures of the features.

A probe never trains the encoder: it runs once over the split in eval mode without
gradients (``spectralearth.downstream.protocols.extract_features``) and fits a small
classifier on the global average of the feature map: a Spec-ResNet's pooled embedding,
the mean of a Spec-ViT's patch tokens (not its class token, which MAE never trains
directly: one definition for every encoder).

- **kNN** (DINO's protocol, Caron et al. 2021): cosine similarity to the L2-normalised train
  embeddings, the ``k`` nearest vote with weight ``exp(sim / T)`` (k = 20, T = 0.07).
- **Linear probe**: multinomial logistic regression (scikit-learn, L-BFGS) on embeddings
  standardised with train statistics; ``C`` fixed (no search on the test split).

Both score patch-level accuracy and macro F1 on the test split.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

KNN_K = 20
KNN_TEMPERATURE = 0.07
LINEAR_C = 1.0  # inverse L2 strength of the logistic regression (sklearn's default)


@dataclass(frozen=True)
class PooledSplit:
    """Pooled embeddings ``features`` [N, D] and dominant-class labels ``labels`` [N]."""

    features: np.ndarray
    labels: np.ndarray


def dominant_labels(dataset, indices: Sequence[int] | None = None) -> np.ndarray:
    """The most frequent labelled class of each patch ``indices`` (default all) of
    ``dataset`` (-1 for a patch without a label): what the patch is "about", from the
    task's own masks (``read_labels``)."""
    indices = range(len(dataset)) if indices is None else indices
    out = np.full(len(indices), -1, dtype=np.int64)
    for j, i in enumerate(indices):
        labels = np.asarray(dataset.read_labels(int(i))).ravel()
        labels = labels[labels >= 0]
        if labels.size:
            out[j] = int(np.bincount(labels).argmax())
    return out


@dataclass(frozen=True)
class ProbeSplit:
    """The patches a probe reads: ``dataset`` (a torch dataset of ``(image, mask)``) and
    the dominant class of each (computed once, shared by every encoder)."""

    dataset: object
    labels: np.ndarray

    @classmethod
    def of(cls, dataset, indices: Sequence[int] | None = None) -> ProbeSplit:
        from torch.utils.data import Subset

        labels = dominant_labels(dataset, indices)
        keep = [int(i) for i, y in zip(indices or range(len(dataset)), labels, strict=True)
                if y >= 0]  # fmt: skip
        return cls(Subset(dataset, keep), labels[labels >= 0])


def pooled_split(
    encoder: torch.nn.Module, split: ProbeSplit, batch_size: int = 16, runtime=None
) -> PooledSplit:
    """The encoder's pooled embedding of every patch of ``split``, with its label;
    ``runtime`` (``downstream.protocols.Runtime``) picks the device (a GPU when lent)."""
    from spectralearth.downstream.protocols import extract_features

    was_training = encoder.training
    encoder.eval()
    try:
        feats, _ = extract_features(encoder, split.dataset, batch_size, runtime)
    finally:
        encoder.train(was_training)
    pooled = feats.mean(dim=(2, 3))  # global average of the feature map (ViT: patch tokens)
    return PooledSplit(pooled.numpy().astype(np.float64), split.labels)


def _scores(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score

    return {
        "accuracy": float(accuracy_score(truth, pred)),
        "macro_f1": float(f1_score(truth, pred, average="macro", zero_division=0)),
    }


def knn_probe(
    train: PooledSplit, test: PooledSplit, k: int = KNN_K, temperature: float = KNN_TEMPERATURE
) -> dict[str, float]:
    """Weighted kNN on cosine similarity (DINO's kNN classifier)."""
    a = train.features / np.maximum(np.linalg.norm(train.features, axis=1, keepdims=True), 1e-12)
    b = test.features / np.maximum(np.linalg.norm(test.features, axis=1, keepdims=True), 1e-12)
    sim = b @ a.T  # [n_test, n_train]
    k = min(k, len(a))
    top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
    weights = np.exp(np.take_along_axis(sim, top, axis=1) / temperature)
    n_classes = int(max(train.labels.max(), test.labels.max())) + 1
    votes = np.zeros((len(b), n_classes))
    np.add.at(votes, (np.arange(len(b))[:, None], train.labels[top]), weights)
    return _scores(votes.argmax(axis=1), test.labels)


def linear_probe(train: PooledSplit, test: PooledSplit, seed: int = 0) -> dict[str, float]:
    """Logistic regression on standardised embeddings (train statistics)."""
    from sklearn.linear_model import LogisticRegression

    mean = train.features.mean(axis=0)
    std = np.maximum(train.features.std(axis=0), 1e-6)
    clf = LogisticRegression(C=LINEAR_C, max_iter=2000, random_state=seed)
    clf.fit((train.features - mean) / std, train.labels)
    return _scores(clf.predict((test.features - mean) / std), test.labels)


def feature_collapse(features: np.ndarray) -> dict[str, float]:
    """The pretraining monitor's measures (``spectralearth.ssl.collapse``) on probe
    embeddings: mean per-dimension std of the L2-normalised rows, its ratio to the
    1/sqrt(D) of evenly spread embeddings, and the RankMe effective rank."""
    from spectralearth.ssl.collapse import effective_rank, feature_std

    z = torch.as_tensor(features, dtype=torch.float32)
    std = feature_std(z)
    return {
        "feature_std": std,
        "std_x_sqrt_dim": std * float(np.sqrt(z.shape[1])),
        "effective_rank": effective_rank(z),
    }


@torch.no_grad()
def recalibrate_batchnorm(encoder: torch.nn.Module, dataset, batch_size: int = 16, runtime=None):
    """Re-estimate every BatchNorm's running mean and variance on ``dataset`` (train mode,
    no gradient, a cumulative average over one pass); the weights do not change.

    The control of "random init + the data's statistics": pretraining moves the running
    statistics of every BatchNorm to the data as a side effect, and a frozen encoder is
    read in eval mode with them, so part of a pretrained encoder's gain over random init
    (whose statistics are the initial 0 / 1) may be these statistics alone.
    """
    from torch.utils.data import DataLoader

    device = runtime.device if runtime is not None else torch.device("cpu")
    norms = [m for m in encoder.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every batch weighs the same
    encoder.to(device).train()
    try:
        for images, _ in DataLoader(dataset, batch_size=batch_size, shuffle=False):
            encoder.forward_features(images.to(device))
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
        encoder.eval().cpu()
    return encoder
