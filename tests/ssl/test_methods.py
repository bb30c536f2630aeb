"""DINO and MAE pretraining, the reference recipes and their named deviations, the AdamW
weight-decay split, the NaN/inf guard of every method, seeded runs, profiles."""

from __future__ import annotations

import json
import math

import lightning.pytorch as pl
import pytest
import torch
import yaml

from spectralearth.config import load_settings
from spectralearth.models import create_model, load_pretrained
from spectralearth.ssl import list_methods, pretrain
from spectralearth.ssl import registry as ssl_registry
from spectralearth.ssl.base import NonFiniteLossError, lr_factor
from spectralearth.ssl.dino import DINO
from spectralearth.ssl.mae import MAE, transformer_of
from spectralearth.ssl.train import micro_batch_size
from tests.helpers import BANDS, make_shards, tiny_settings

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _record(monkeypatch, name: str, cls: type) -> list:
    """Register a subclass of ``cls`` under ``name`` that keeps its instances."""
    modules: list = []

    class Recording(cls):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            modules.append(self)

    monkeypatch.setitem(ssl_registry.METHODS, name, Recording)
    return modules


def _same_encoder(module, out) -> None:
    saved = load_pretrained(out).state_dict()
    for key, value in module.encoder.state_dict().items():
        assert torch.equal(value, saved[key]), key


def test_methods_registered():
    from spectralearth.names import METHODS

    assert list_methods() == sorted(METHODS)


# --- DINO ---------------------------------------------------------------------------------


def test_dino_teacher_momentum_spans_the_whole_run():
    encoder = create_model("spec_resnet18")
    dino = DINO(encoder, max_steps=1000, proj_hidden_dim=64)
    m = [dino.momentum(s) for s in range(1000)]
    assert m[0] == pytest.approx(0.996)
    assert all(a <= b for a, b in zip(m, m[1:], strict=False))
    # The reference schedule reaches 1 after 10 of 100 epochs; this one is still near start.
    assert m[100] < 0.9961
    assert all(v < 1.0 for v in m[:-1]) and m[-1] == 1.0
    assert m[990] < 1.0
    # The reference's, as a named option: 1 after 10 epochs (here 10 steps per epoch).
    ref = DINO(encoder, max_steps=1000, proj_hidden_dim=64, teacher_momentum_epochs=10)
    ref._lengths = (1000, 10)  # what a trainer with 10 batches per epoch would report
    assert ref.momentum(0) == pytest.approx(0.996) and ref.momentum(50) < 1.0
    assert ref.momentum(100) == ref.momentum(500) == 1.0
    # Teacher temperature: the reference's 0.04 throughout (lightly's 0.04 -> 0.04) ...
    assert [dino.teacher_temperature(s) for s in (0, 50, 100, 999)] == [pytest.approx(0.04)] * 4
    # ... and the warm-up mechanics when a profile asks for DINO's 0.07 (over 30%).
    warm = DINO(encoder, max_steps=1000, proj_hidden_dim=64, teacher_temp=0.07,
                teacher_temp_warmup_frac=0.3)  # fmt: skip
    t = [warm.teacher_temperature(s) for s in (0, 150, 300, 999)]
    assert t[0] == pytest.approx(0.04) and t[1] == pytest.approx(0.055)
    assert t[2] == t[3] == pytest.approx(0.07)


# --- the reference recipes and their named deviations ---------------------------------------


def _built(method: str, backbone: str = "spec_vit_tiny", **overrides):
    settings = tiny_settings(
        **{"method": method, "backbone": backbone, "crop_size": 16, **overrides}
    )
    encoder = create_model(settings.backbone, in_chans=BANDS)
    return ssl_registry.METHODS[method].from_settings(encoder, settings)


def _crop_scale(module) -> tuple:
    return module.augment.scale


def test_method_defaults_are_the_reference_recipes():
    # configs/experiment/pretrain/* and src/models/*_module.py of AABNassim/spectral_earth
    moco = _built("moco", "spec_resnet18", crop_size=64)
    hp = moco.hparams
    assert (hp.temperature, hp.ema_momentum, hp.weight_decay) == (0.1, 0.999, 1e-4)
    assert moco.criterion.temperature == 0.1
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in moco.projection_head.modules())
    assert hp.proj_hidden_dim == 2048 and hp.proj_out_dim == 128
    assert (hp.lr_schedule, tuple(hp.lr_milestones)) == ("multistep", (0.6, 0.8))
    assert _crop_scale(moco) == pytest.approx((0.08, 1.0))
    assert _crop_scale(_built("moco")) == pytest.approx((0.08, 0.2))  # crops under 32 px
    assert isinstance(moco.configure_optimizers()["optimizer"], torch.optim.SGD)

    dino = _built("dino")
    hp = dino.hparams
    assert hp.weight_decay == 1e-5 and tuple(hp.betas) == (0.9, 0.999)
    assert (hp.warmup_teacher_temp, hp.teacher_temp) == (0.04, 0.04)
    assert dino.head.freeze_last_layer == 1 and hp.lr_schedule == "cosine_over_run"
    assert (hp.proj_hidden_dim, hp.bottleneck_dim, hp.out_dim) == (2048, 256, 128)
    assert _crop_scale(dino) == pytest.approx((0.05, 1.0))

    mae = _built("mae")
    hp = mae.hparams
    opt = mae.configure_optimizers()["optimizer"]
    assert isinstance(opt, torch.optim.AdamW)
    assert opt.defaults["betas"] == (0.9, 0.999) and hp.weight_decay == 0.01  # torch's
    assert (hp.mask_ratio, hp.decoder_dim, hp.decoder_depth, hp.decoder_heads) == (0.9, 512, 1, 16)
    assert hp.lr_schedule == "cosine_to_zero" and hp.norm_pix_loss
    assert _crop_scale(mae) == pytest.approx((0.4, 1.0))


def test_deviations_are_named_settings():
    deviate = dict(crop_scale=[0.2, 1.0], lr_schedule="cosine_to_zero", head_hidden_dim=64)
    moco = _built("moco", "spec_resnet18", **deviate, weight_decay=0.0)
    assert _crop_scale(moco) == pytest.approx((0.2, 1.0))
    assert moco.hparams.lr_schedule == "cosine_to_zero" and moco.hparams.proj_hidden_dim == 64
    assert moco.hparams.weight_decay == 0.0
    dino = _built("dino", lr_schedule="multistep", lr_milestones=[0.5])
    assert dino.hparams.lr_schedule == "multistep" and tuple(dino.hparams.lr_milestones) == (0.5,)
    mae = _built("mae", adamw_betas=[0.9, 0.95], weight_decay=0.05)  # the MAE paper's
    opt = mae.configure_optimizers()["optimizer"]
    assert opt.defaults["betas"] == (0.9, 0.95) and opt.param_groups[0]["weight_decay"] == 0.05
    with pytest.raises(ValueError, match="lr_schedule 'cosine' is not one of"):
        tiny_settings(lr_schedule="cosine")
    with pytest.raises(ValueError, match="crop_scale"):
        tiny_settings(crop_scale=[0.5, 0.2])


def test_ema_momentum_sets_the_key_encoder_and_teacher_start():
    # None keeps the reference's 0.999 (MoCo key encoder) / 0.996 (DINO teacher start)
    assert _built("moco", "spec_resnet18").hparams.ema_momentum == 0.999
    assert _built("dino").momentum(0) == pytest.approx(0.996)
    assert _built("moco", "spec_resnet18", ema_momentum=0.99).hparams.ema_momentum == 0.99
    dino = _built("dino", ema_momentum=0.99)
    assert dino.momentum(0) == pytest.approx(0.99) and dino.hparams.momentum_end == 1.0
    with pytest.raises(ValueError, match="ema_momentum 1.0 must lie in"):
        tiny_settings(ema_momentum=1.0)


def test_lr_schedules():
    # MoCo: MultiStepLR x0.1 at epochs 60 and 80 of 100 (here 10 steps per epoch)
    f = [lr_factor("multistep", s, 1000) for s in (0, 599, 600, 799, 800, 999)]
    assert f == pytest.approx([1.0, 1.0, 0.1, 0.1, 0.01, 0.01])
    # DINO: 20% linear warm-up, then a cosine whose half-period is the run: ends near 10%
    d = [lr_factor("cosine_over_run", s, 100, warmup=20) for s in (0, 9, 19, 20, 100)]
    assert d[0] == pytest.approx(1 / 20) and d[1] == pytest.approx(0.5) and d[2] == 1.0
    assert d[3] == 1.0 and d[4] == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.8)))
    # MAE: cosine to 0 over the run (the same as cosine_over_run without a warm-up)
    m = [lr_factor("cosine_to_zero", s, 200) for s in (0, 100, 199)]
    assert m[0] == 1.0 and m[1] == pytest.approx(0.5, abs=0.01) and m[2] < 1e-3
    assert lr_factor("cosine_over_run", 50, 200) == pytest.approx(lr_factor("cosine_to_zero", 50, 200), abs=0.01)  # fmt: skip
    with pytest.raises(ValueError, match="unknown lr_schedule"):
        lr_factor("linear", 0, 10)


@pytest.mark.parametrize("method", ["dino", "mae"])
def test_adamw_decays_weights_only(method):
    module = _built(method)
    groups = {g["name"]: g for g in module.configure_optimizers()["optimizer"].param_groups}
    assert groups["decay"]["weight_decay"] == module.hparams.weight_decay > 0
    assert groups["no_decay"]["weight_decay"] == 0.0
    names = {id(p): n for n, p in module.named_parameters()}
    decayed = {names[id(p)] for p in groups["decay"]["params"]}
    exempt = {names[id(p)] for p in groups["no_decay"]["params"]}
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    assert decayed | exempt == trainable and not decayed & exempt  # each once, teacher out
    assert not any(n.startswith("teacher_") for n in decayed | exempt)
    norms = {
        f"{mn}.{pn}"
        for mn, m in module.named_modules()
        if isinstance(m, (torch.nn.LayerNorm, torch.nn.BatchNorm2d, torch.nn.BatchNorm1d))
        for pn, _ in m.named_parameters(recurse=False)
    }
    tokens = {
        n for n in trainable if n.rsplit(".", 1)[-1] in ("cls_token", "pos_embed", "mask_token")
    }
    biases = {n for n in trainable if n.endswith("bias")}
    assert norms & trainable and tokens and biases
    assert (norms & trainable) | tokens | biases <= exempt
    assert all(module.get_parameter(n).ndim >= 2 for n in decayed)  # conv / linear weights
    # the reference code's AdamW(self.parameters()): one group, everything decayed
    everything = _built(method, weight_decay_all_parameters=True)
    (group,) = everything.configure_optimizers()["optimizer"].param_groups
    assert (
        len(group["params"]) == len([p for p in everything.parameters() if p.requires_grad])
        and group["weight_decay"] == everything.hparams.weight_decay
    )


def test_dino_pretrain_by_epochs(tmp_path, monkeypatch):
    shards_dir, stats, _, _ = make_shards(tmp_path)
    modules = _record(monkeypatch, "dino", DINO)
    last_layer = _LastLayerAtEpochEnd()
    # 6 train locations, batch 2: 3 steps per epoch, 2 epochs; 1 warm-up epoch.
    settings = tiny_settings(
        method="dino",
        backbone="spec_vit_tiny",
        steps=0,
        epochs=2,
        batch_size=2,
        crop_size=16,
        lr=1e-3,
        warmup_epochs=1,
    )
    out = tmp_path / "dino"
    run = pretrain(settings, shards_dir, stats, out, progress=False, callbacks=[last_layer])
    (module,) = modules
    assert run.method == "dino" and run.steps == 6 and len(run.loss_history) == 6
    assert all(math.isfinite(v) for v in run.loss_history)
    # freeze_last_layer (the reference's 1 epoch): the head's last layer waits an epoch
    start, after_first, after_second = last_layer.weights
    assert torch.equal(start, after_first) and not torch.equal(after_first, after_second)
    # Momentum follows the cosine over all 6 steps: below 1 until the final step.
    m = module.momentum_history
    assert len(m) == 6 and m[0] == pytest.approx(0.996)
    assert all(v < 1.0 for v in m[:-1]) and m[-1] == 1.0
    assert all(a < b for a, b in zip(m, m[1:], strict=False))
    assert module.teacher_temp_history == [pytest.approx(0.04)] * 6
    # AdamW; warm-up of one epoch (3 steps), then the cosine over the run.
    opt = module.trainer.optimizers[0]
    assert isinstance(opt, torch.optim.AdamW)
    assert module.schedule_lengths(0, 1.0) == (6, 3)
    _same_encoder(module, out)
    # The EMA teacher lags the student; it never gets gradients.
    student = dict(module.encoder.named_parameters())
    teacher = dict(module.teacher_encoder.named_parameters())
    assert any(not torch.equal(student[n], teacher[n]) for n in student)
    assert all(not p.requires_grad for p in module.teacher_encoder.parameters())
    assert json.loads((out / "run.json").read_text())["hparams"]["momentum_start"] == 0.996


class _LastLayerAtEpochEnd(pl.Callback):
    """The student head's trainable last-layer weight at the start and after each epoch."""

    def __init__(self) -> None:
        self.weights: list[torch.Tensor] = []

    def _keep(self, module) -> None:
        last = module.head.last_layer
        weight = getattr(last, "weight_v", None)
        if weight is None:  # torch's parametrizations.weight_norm
            weight = last.parametrizations.weight.original1
        self.weights.append(weight.detach().clone())

    def on_train_start(self, trainer, pl_module) -> None:
        self._keep(pl_module)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._keep(pl_module)


# --- MAE ----------------------------------------------------------------------------------


def test_mae_adapter_before_masking_and_spectral_targets():
    torch.manual_seed(0)
    encoder = create_model("spec_vit_tiny", in_chans=BANDS)
    mae = MAE(encoder, crop_size=16, mask_ratio=0.9)
    x = torch.randn(2, BANDS, 16, 16)
    seen = {}

    def record(name):
        def hook(module, inputs, output):
            seen[name] = tuple(inputs[0].shape)

        return hook

    encoder.spectral_adapter.register_forward_hook(record("adapter"))
    transformer_of(encoder).blocks[0].register_forward_hook(record("tokens"))
    from lightly.models.utils import random_token_mask

    idx_keep, idx_mask = random_token_mask((2, 17), mask_ratio=0.9)  # class + 4x4 tokens
    assert idx_keep.shape == (2, 2) and idx_mask.shape == (2, 15)  # class token + 1 kept
    pred = mae.reconstruct(x, idx_keep, idx_mask)
    assert seen["adapter"] == (2, BANDS, 16, 16)  # every pixel through the adapter
    assert seen["tokens"] == (2, 2, 192)  # the ViT sees the kept tokens only
    assert pred.shape == (2, 15, 4 * 4 * BANDS)
    target = mae.masked_targets(x, idx_mask)
    for b in range(2):
        for j, token in enumerate((idx_mask[b] - 1).tolist()):
            r, c = divmod(token, 4)
            spectra = x[b, :, 4 * r : 4 * r + 4, 4 * c : 4 * c + 4].permute(1, 2, 0).reshape(-1)
            expected = (spectra - spectra.mean()) / torch.sqrt(spectra.var() + 1e-6)
            torch.testing.assert_close(target[b, j], expected, atol=1e-4, rtol=1e-4)


def test_mae_pretrain(tmp_path, monkeypatch):
    shards_dir, stats, _, _ = make_shards(tmp_path)
    modules = _record(monkeypatch, "mae", MAE)
    settings = tiny_settings(method="mae", backbone="spec_vit_tiny", crop_size=16, lr=1e-3)
    out = tmp_path / "mae"
    run = pretrain(settings, shards_dir, stats, out, progress=False)
    (module,) = modules
    assert run.method == "mae" and run.steps == 3
    assert all(math.isfinite(v) for v in run.loss_history)
    assert run.collapse.dim == 192 and len(module.feature_std_history) == 3  # class token
    assert module.hparams.mask_ratio == 0.9
    assert module.decoder.pos_embed.shape[-1] == 512 and len(module.decoder.blocks) == 1
    assert isinstance(module.trainer.optimizers[0], torch.optim.AdamW)
    _same_encoder(module, out)


def test_mae_needs_a_vit(tmp_path):
    shards_dir, stats, _, _ = make_shards(tmp_path)
    settings = tiny_settings(method="mae", backbone="spec_resnet18", crop_size=16)
    with pytest.raises(ValueError, match="Vision Transformer.*spec_resnet18"):
        pretrain(settings, shards_dir, stats, tmp_path / "out", progress=False)


# --- every method -------------------------------------------------------------------------


@pytest.mark.parametrize("method,bad", [("moco", math.nan), ("dino", math.inf), ("mae", math.nan)])
def test_non_finite_loss_stops_the_run_naming_the_step(tmp_path, monkeypatch, method, bad):
    shards_dir, stats, _, _ = make_shards(tmp_path)
    base = ssl_registry.METHODS[method]

    class Diverging(base):
        def training_loss(self, batch):
            loss = super().training_loss(batch)
            return loss * bad if self.global_step == 1 else loss

    monkeypatch.setitem(ssl_registry.METHODS, method, Diverging)
    settings = tiny_settings(method=method, backbone="spec_vit_tiny", steps=3, crop_size=16)
    out = tmp_path / "out"
    with pytest.raises(NonFiniteLossError, match=f"{method} loss is {bad} at step 1"):
        pretrain(settings, shards_dir, stats, out, progress=False)
    assert not (out / "model.safetensors").exists() and not (out / "run.json").exists()


def test_seeded_runs_repeat(tmp_path):
    shards_dir, stats, _, _ = make_shards(tmp_path)
    settings = tiny_settings(method="mae", backbone="spec_vit_tiny", steps=2, crop_size=16)
    a = pretrain(settings, shards_dir, stats, tmp_path / "a", progress=False)
    b = pretrain(settings, shards_dir, stats, tmp_path / "b", progress=False)
    assert a.loss_history == b.loss_history and a.collapse == b.collapse
    wa, wb = (
        load_pretrained(tmp_path / "a").state_dict(),
        load_pretrained(tmp_path / "b").state_dict(),
    )
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_gradient_accumulation_splits_the_global_batch(tmp_path):
    shards_dir, stats, _, _ = make_shards(tmp_path)
    settings = tiny_settings(
        method="mae",
        backbone="spec_vit_tiny",
        steps=2,
        batch_size=2,
        crop_size=16,
        accumulate_grad_batches=2,
    )
    run = pretrain(settings, shards_dir, stats, tmp_path / "acc", progress=False)
    assert run.steps == 2 and run.micro_batch_size == 1
    assert len(run.loss_history) == 4  # two micro-batches per optimizer step
    assert micro_batch_size(tiny_settings(batch_size=256, accumulate_grad_batches=4), 8) == 8
    with pytest.raises(ValueError, match="does not split"):
        micro_batch_size(tiny_settings(batch_size=6, accumulate_grad_batches=4), 1)
    # MoCo's BatchNorm head needs 2 samples per device: a clear refusal, before training
    moco = tiny_settings(steps=2, batch_size=2, accumulate_grad_batches=2)
    with pytest.raises(ValueError, match="BatchNorm projection head.*raise batch_size"):
        pretrain(moco, shards_dir, stats, tmp_path / "moco", progress=False)
    assert not (tmp_path / "moco").exists()
    # the paper profile's sync_batchnorm has no CPU kernel: refused before any process starts
    cpu_ddp = tiny_settings(devices=2, strategy="ddp", batch_size=8, sync_batchnorm=True)
    with pytest.raises(ValueError, match="sync_batchnorm needs GPUs.*profile 'test'"):
        pretrain(cpu_ddp, shards_dir, stats, tmp_path / "sync", progress=False)
    assert not (tmp_path / "sync").exists()


# --- profiles -----------------------------------------------------------------------------


def test_paper_profile_per_method():
    def pre(method=None, profile="paper"):
        return load_settings(profile=profile, overrides={"pretrain": {"method": method}}).pretrain

    moco, dino, mae = pre("moco"), pre("dino"), pre("mae")
    assert pre().method == "moco"
    for s in (moco, dino, mae):
        assert s.batch_size == 256 and s.epochs > 0 and s.checkpoint_every_n_steps > 0
    for s in (moco, dino, mae):  # the rest is each method's default: the reference's
        assert s.memory_bank_size == 32768 and s.sync_batchnorm and s.gradient_clip_val == 0
        assert (s.crop_scale, s.lr_schedule, s.head_hidden_dim, s.adamw_betas) == (None,) * 4
        assert s.weight_decay is None and not s.weight_decay_all_parameters
    assert (moco.lr, moco.epochs) == (1e-3, 100)
    assert (dino.lr, dino.epochs, dino.warmup_epochs) == (1e-3, 100, 20)
    assert (mae.lr, mae.epochs, mae.backbone) == (1e-4, 200, "spec_vit_small")
    tiny = pre(profile="cpu-tiny")
    assert (tiny.method, tiny.backbone, tiny.steps) == ("moco", "spec_resnet18", 30)
    assert tiny.head_hidden_dim == 512  # the one CPU override of the recipe
    assert pre("mae", "cpu-tiny").backbone == "spec_vit_tiny"


def test_old_params_files_still_load(tmp_path):
    from tests.helpers import REPO

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    old = {k: v for k, v in params["pretrain"]["profiles"]["cpu-tiny"].items() if k != "methods"}
    params["pretrain"]["profiles"] = {"cpu-tiny": old}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    s = load_settings(path).pretrain
    assert s.epochs == 0 and s.accumulate_grad_batches == 1 and s.checkpoint_every_n_steps == 0
    assert s.strategy == "auto" and s.mask_ratio == 0.9
    assert s.crop_scale is None and s.lr_schedule is None and not s.sync_batchnorm


# --- CLI ----------------------------------------------------------------------------------


def test_cli_pretrain_method_backbone_data_out(tmp_path, capsys):
    from spectralearth.cli import main
    from tests.helpers import write_params

    params = write_params(tmp_path / "project")
    shards_dir, stats, _, _ = make_shards(tmp_path / "curated")
    (tmp_path / "stats.json").write_text(json.dumps(stats))
    out = tmp_path / "out"
    args = ["--params", str(params), "pretrain", "--method", "mae", "--backbone", "spec_vit_tiny"]
    args += ["--data", str(shards_dir.parent), "--stats", str(tmp_path / "stats.json")]
    args += ["--out", str(out), "--steps", "2"]
    assert main(args) == 0
    run = json.loads((out / "run.json").read_text())
    assert (run["method"], run["backbone"], run["steps"]) == ("mae", "spec_vit_tiny", 2)
    assert math.isfinite(run["final_loss"]) and run["mlflow_run_id"]
    assert load_pretrained(out).model_name == "spec_vit_tiny"
    assert "pretrain: mae spec_vit_tiny 2 steps" in capsys.readouterr().out

    # MLflow: a version of spectralearth-<backbone>-<method> with the lineage tags
    import mlflow

    from spectralearth.config import load_settings
    from spectralearth.tracking import configure

    settings = load_settings(params)
    configure(settings.tracking)
    client = mlflow.MlflowClient()
    version = client.get_model_version_by_alias(
        "spectralearth-spec-vit-tiny-mae", "latest-pretrained"
    )
    assert version.run_id == run["mlflow_run_id"]
    assert version.tags["data_version"].startswith("manifest:")  # fake shards: no index file
    assert len(version.tags["git_commit"].split("+")[0]) == 40
    assert version.tags["dagster_run_id"] == "none"  # not run from Dagster
    assert (
        client.get_run(run["mlflow_run_id"]).data.tags["git_commit"] == version.tags["git_commit"]
    )
    assert (out / "loss.png").is_file()
    # collapse monitoring reached MLflow through the Lightning logger, every step
    for metric in ("feature_std", "effective_rank"):
        assert len(client.get_metric_history(run["mlflow_run_id"], metric)) == 2, metric
    assert run["collapse"]["collapsed"] is False and run["format_version"] == 2
