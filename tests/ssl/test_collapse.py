"""Collapse monitoring: the measures, the verdict, and a collapsed encoder seen by a real run."""

from __future__ import annotations

import json
import math

import pytest
import torch
from lightning.pytorch.loggers.logger import Logger
from torch import nn

from spectralearth.ssl import pretrain
from spectralearth.ssl import registry as ssl_registry
from spectralearth.ssl.collapse import (
    RepresentationCollapseWarning,
    effective_rank,
    feature_std,
    summarise,
)
from spectralearth.ssl.moco import MoCo
from tests.helpers import make_shards, tiny_settings

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_measures_of_spread_and_constant_embeddings():
    torch.manual_seed(0)
    spread = torch.randn(512, 64)
    assert feature_std(spread) == pytest.approx(1 / math.sqrt(64), rel=0.05)
    assert 50 < effective_rank(spread) <= 64
    constant = torch.ones(16, 64) * torch.randn(1, 64)
    assert feature_std(constant) < 1e-6
    assert effective_rank(constant) == pytest.approx(1.0, abs=1e-3)
    assert effective_rank(torch.zeros(4, 8)) == 0.0
    # a feature map is pooled to a vector per sample first
    assert feature_std(torch.randn(8, 4, 2, 2)) > 0


def test_summary_averages_the_last_steps_and_judges_against_one_over_sqrt_dim():
    healthy = summarise([0.0] * 5 + [0.05] * 10, [3.0] * 15, dim=100)
    assert healthy.feature_std == pytest.approx(0.05) and healthy.steps_averaged == 10
    assert healthy.threshold == pytest.approx(0.01) and not healthy.collapsed
    collapsed = summarise([0.05] * 5 + [0.001] * 10, [1.0] * 15, dim=100)
    assert collapsed.collapsed and "collapse" in collapsed.message()
    stricter = summarise([0.05] * 10, [3.0] * 10, dim=100, fraction=0.6)
    assert stricter.collapsed and stricter.threshold == pytest.approx(0.06)
    nothing = summarise([], [], dim=100)
    assert nothing.feature_std is None and not nothing.collapsed


class _Constant(nn.Module):
    """An encoder that maps every input to the same vector (gradients still flow)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.num_features = inner.num_features
        self.in_chans, self.model_name = inner.in_chans, inner.model_name
        self.register_buffer("value", torch.linspace(0.1, 1.0, inner.num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) * 0.0 + self.value


class _Metrics(Logger):
    """Keeps what Lightning logs (as the MLflow logger would receive it)."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict] = []

    @property
    def name(self) -> str:
        return "captured"

    @property
    def version(self) -> int:
        return 0

    def log_metrics(self, metrics, step=None) -> None:
        self.rows.append(dict(metrics))

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass


def test_a_collapsed_encoder_warns_and_run_json_says_collapsed(tmp_path, monkeypatch):
    shards_dir, stats, _, _ = make_shards(tmp_path)

    class CollapsedMoCo(MoCo):
        def __init__(self, encoder, **kwargs):
            super().__init__(_Constant(encoder), **kwargs)

    monkeypatch.setitem(ssl_registry.METHODS, "moco", CollapsedMoCo)
    logger = _Metrics()
    out = tmp_path / "out"
    with pytest.warns(RepresentationCollapseWarning, match=r"representation collapse.*512-d"):
        run = pretrain(tiny_settings(), shards_dir, stats, out, logger=logger, progress=False)
    assert run.collapse.collapsed and run.collapse.feature_std < run.collapse.threshold
    assert run.collapse.effective_rank == pytest.approx(1.0, abs=0.01)
    summary = json.loads((out / "run.json").read_text())["collapse"]
    assert summary["collapsed"] is True
    assert summary["threshold"] == pytest.approx(0.1 / math.sqrt(512))
    # every step logged both measures as Lightning metrics
    stds = [r["feature_std"] for r in logger.rows if "feature_std" in r]
    ranks = [r["effective_rank"] for r in logger.rows if "effective_rank" in r]
    assert len(stds) == len(ranks) == 3 and max(stds) < 1e-6
