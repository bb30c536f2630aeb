"""Helpers shared by the tests (no test file imports another): paths, a tiny params.yaml, a
scratch git+DVC copy of the project, fake shards, fake generic images, the fake downstream
tree and a tiny encoder."""

from __future__ import annotations

import os
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
import torch
import yaml
from rasterio.transform import from_origin
from torch import nn

from spectralearth.config import PretrainSettings

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def shared(*parts: str) -> Path:
    """A path in ../shared/data, or skip the test with the reason."""
    p = SHARED_DATA.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"real reference data not available: {p} (../shared/data is absent)")
    return p


def tiny_params(data_dir: Path, **section_overrides) -> dict:
    """The repo's params.yaml scaled down for tests (same keys, small numbers)."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data_dir"] = str(data_dir)
    params["synth"].update(scenes=6, size=128, seed=7)
    params["curate"].update(patch_size=32, max_cloud_frac=0.05, val_frac=0.2, test_frac=0.2)
    params["pretrain"]["profiles"]["cpu-tiny"].update(
        steps=2, batch_size=4, crop_size=32, memory_bank_size=16
    )
    params["evaluate"].update(epochs=2, batch_size=4)
    for section, values in section_overrides.items():
        params[section].update(values)
    return params


def run_ok(cmd, cwd, env, check: bool = True, timeout: int = 900) -> subprocess.CompletedProcess:
    """Run ``cmd``; with ``check``, fail the test with the tails of its output if it fails."""
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
            f"{proc.stderr[-3000:]}"
        )
    return proc


def project_env(root: Path, home: Path, **extra: str) -> dict[str, str]:
    """The environment a project in ``root`` runs its tools in: this checkout's code and
    virtual environment first, ``root/params.yaml``, DAGSTER_HOME ``home``, telemetry off,
    and none of the caller's data, archive, deployment or MLflow settings; ``extra`` on top."""
    leaks = ("SPECTRALEARTH_DATA_DIR", "SPECTRALEARTH_ARCHIVE", "SPECTRALEARTH_DEPLOYMENT")
    env = {k: v for k, v in os.environ.items() if k not in (*leaks, "MLFLOW_TRACKING_URI")}
    env.update(
        PATH=f"{Path(sys.executable).parent}:{env['PATH']}",
        PYTHONPATH=f"{REPO / 'src'}:{REPO}",
        SPECTRALEARTH_PARAMS=str(root / "params.yaml"),
        DAGSTER_HOME=str(home),
        DAGSTER_DISABLE_TELEMETRY="1",
        DVC_NO_ANALYTICS="1",
        MLFLOW_DISABLE_TELEMETRY="true",
        GX_ANALYTICS_ENABLED="false",
        **extra,
    )
    return env


def scratch_project(
    root: Path, data: Path, params: dict, pipeline: dict | None = None, commit: bool = False
) -> dict[str, str]:
    """A scratch git+DVC copy of the project in ``root``: the repo's dvc.yaml (or
    ``pipeline``), data.dvc, .dvc (plot templates) and ignore files, ``params`` as
    params.yaml with ``data_dir: data``, a copy of the ``data`` folder, and the real ``src``
    and ``expectations`` linked in (dvc.yaml's source deps are the real files); ``data.dvc``
    committed to DVC, and with ``commit`` all of it to git (`dvc exp` starts from a commit).
    Returns the environment to run the project's tools in."""
    for name in ("data.dvc", ".dvcignore", ".gitignore"):
        shutil.copy(REPO / name, root / name)
    if pipeline is None:
        shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    else:
        (root / "dvc.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))
    shutil.copytree(REPO / ".dvc", root / ".dvc", ignore=shutil.ignore_patterns("tmp", "cache"))
    (root / "params.yaml").write_text(
        yaml.safe_dump({**params, "data_dir": "data"}, sort_keys=False)
    )
    shutil.copytree(data, root / "data")
    (root / "src").symlink_to(REPO / "src")
    (root / "expectations").symlink_to(REPO / "expectations")
    home = root / "data" / "dagster_home"
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = project_env(root, home)
    run_ok(["git", "init", "-q"], root, env)
    run_ok(["git", "config", "user.email", "tests@spectralearth.invalid"], root, env)
    run_ok(["git", "config", "user.name", "spectralearth tests"], root, env)
    run_ok(["dvc", "commit", "-f", "-q", "data.dvc"], root, env)
    if commit:
        run_ok(["git", "add", "-A"], root, env)
        run_ok(["git", "commit", "-q", "-m", "scratch project"], root, env)
    return env


def tighter_cloud_threshold(index: pd.DataFrame) -> float:
    """A cloud threshold that drops at least one patch but keeps train and test non-empty."""
    for t in sorted(index["cloud_frac"].unique(), reverse=True)[1:]:
        kept = index[index["cloud_frac"] <= t]
        if len(kept) < len(index) and {"train", "test"} <= set(kept["split"]):
            return float(t)
    pytest.skip("the tiny archive has no cloudy patch whose removal keeps train and test non-empty")


def write_params(folder: Path, **overrides) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(tiny_params(folder / "data", **overrides), sort_keys=False))
    return path


# --- fake training shards -----------------------------------------------------------------

BANDS = 202


def make_shards(
    root,
    n_locations: int = 8,
    two_date_locations=(0, 1, 2, 3),
    patch: int = 32,
    splits=None,
    per_shard: int = 5,
    seed: int = 0,
):
    """Write fake curated shards (manifest.parquet + int16 .npy) and return (dir, stats)."""
    rng = np.random.default_rng(seed)
    shards_dir = root / "shards"
    shards_dir.mkdir(parents=True)
    splits = splits or {6: "val", 7: "test"}
    rows, patches = [], []
    for loc in range(n_locations):
        n_dates = 2 if loc in two_date_locations else 1
        base = rng.integers(200, 4000, size=(BANDS, 1, 1))
        for d in range(n_dates):
            rows.append(
                {
                    "patch_id": f"{loc:07d}/{d:05d}",
                    "location_id": loc,
                    "scene_id": 100 * d + loc,
                    "datetime": pd.Timestamp("2023-01-01", tz="UTC")
                    + pd.Timedelta(days=40 * d + loc),
                    "split": splits.get(loc, "train"),
                }
            )
            noise = rng.integers(-150, 150, size=(BANDS, patch, patch))
            patches.append((base + noise + 300 * d).astype(np.int16))
    for start in range(0, len(rows), per_shard):
        name = f"shard-{start // per_shard:05d}.npy"
        np.save(shards_dir / name, np.stack(patches[start : start + per_shard]))
        for j, row in enumerate(rows[start : start + per_shard]):
            row["shard"], row["index"] = name, j
    manifest = pd.DataFrame(rows).astype(
        {"location_id": "int64", "scene_id": "int64", "index": "int64"}
    )
    manifest.to_parquet(shards_dir / "manifest.parquet", index=False)
    data = np.stack(patches).astype(np.float64)
    stats = {
        "mean": data.mean(axis=(0, 2, 3)).tolist(),
        "std": data.std(axis=(0, 2, 3)).tolist(),
        "wavelengths": np.linspace(420.0, 2440.0, BANDS).round(2).tolist(),
        "n_patches": len(patches),
    }
    return shards_dir, stats, manifest, np.stack(patches)


def tiny_settings(**overrides) -> PretrainSettings:
    values = dict(
        method="moco",
        backbone="spec_resnet18",
        steps=3,
        batch_size=4,
        crop_size=32,
        lr=0.03,
        precision="32-true",
        accelerator="cpu",
        devices=1,
        num_workers=0,
        memory_bank_size=64,
        seed=0,
        profile="test",
    )
    values.update(overrides)
    return PretrainSettings(**values)


# --- fake generic images (GeoTIFF / ENVI with band wavelengths) --------------------------

NODATA = -32768
POTSDAM_TILE = ("enmap_potsdam", "images", "enmap_potsdam_tile_128_0.tif")
TRANSFORM = from_origin(366015.0, 5809965.0, 30.0, 30.0)  # UTM 33N, Potsdam
WL = np.array([450.0, 550.0, 650.0, 850.0, 1650.0])


def cube(dtype="int16", seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    data = rng.integers(50, 6000, size=(len(WL), 6, 7)).astype(dtype)
    data[:, 0, 0] = NODATA
    return data


def write_tif(path, data, *, band_tags=None, descriptions=None, tags=None, crs="EPSG:32633",
               nodata=NODATA):  # fmt: skip
    profile = dict(driver="GTiff", width=data.shape[2], height=data.shape[1],
                   count=data.shape[0], dtype=data.dtype, nodata=nodata)  # fmt: skip
    if crs is not None:
        profile.update(crs=crs, transform=TRANSFORM)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        for i in range(data.shape[0]):
            if band_tags is not None:
                dst.update_tags(i + 1, **band_tags[i])
            if descriptions is not None:
                dst.set_band_description(i + 1, descriptions[i])
        if tags:
            dst.update_tags(**tags)
    return path


def nm_tags(wl=WL, units="Nanometers"):
    return [{"wavelength": f"{w:g}", "wavelength_units": units, "fwhm": "10"} for w in wl]


def write_envi(path, data, interleave, header_lines):
    profile = dict(driver="ENVI", width=data.shape[2], height=data.shape[1],
                   count=data.shape[0], dtype=data.dtype, crs="EPSG:32633",
                   transform=TRANSFORM, interleave=interleave)  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    hdr = path.with_suffix(".hdr")
    hdr.write_text(hdr.read_text().rstrip("\n") + "\n" + "\n".join(header_lines) + "\n")
    return path


def envi_lines(wl=WL, units="Nanometers", bbl=None):
    lines = [
        "wavelength units = " + units,
        "wavelength = {\n " + ",\n ".join(f"{w:g}" for w in wl) + "}",
        "fwhm = {" + ", ".join("10" for _ in wl) + "}",
        "data ignore value = -32768",
        "acquisition time = 2023-05-01T10:20:30.123456789Z",
    ]
    if bbl is not None:
        lines.append("bbl = {" + ", ".join(str(b) for b in bbl) + "}")
    return lines


# --- the fake downstream tree (tests/data/downstream/make_fake.py) ------------------------

MAKE_FAKE = REPO / "tests" / "data" / "downstream" / "make_fake.py"


def make_fake(splits_dir: Path, out: Path, *extra: str) -> Path:
    """Run the fake-data script beside the tests (torchgeo style), in this process."""
    runpy.run_path(str(MAKE_FAKE))["main"]([str(splits_dir), str(out), *extra])
    return out


class TinyEncoder(nn.Module):
    """Spectral adapter + two stages, per pixel (1x1 convs: the fake labels are per pixel)."""

    def __init__(self, in_chans: int = 202):
        super().__init__()
        self.num_features = 16
        self.spectral_adapter = nn.Sequential(nn.Conv2d(in_chans, 16, 1), nn.BatchNorm2d(16))
        self.stage1 = nn.Conv2d(16, 16, 1)
        self.stage2 = nn.Conv2d(16, 16, 1)

    def forward_features(self, x):
        return self.stage2(torch.relu(self.stage1(self.spectral_adapter(x))))


# --- the import graph of the library (what a DVC stage's command depends on) ---------------


def module_file(module: str) -> Path | None:
    """The source file of a ``spectralearth.*`` module or package (None if there is none)."""
    base = REPO / "src" / Path(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path: Path) -> set[str]:
    """Every ``spectralearth`` module ``path`` imports, at module level or inside functions
    (``from spectralearth.x import y`` counts ``spectralearth.x`` and, if it is a module,
    ``spectralearth.x.y``; relative imports are resolved)."""
    import ast

    rel = path.relative_to(REPO / "src").with_suffix("")
    package = list(rel.parts[:-1]) if rel.name != "__init__" else list(rel.parts[:-1])
    if rel.name == "__init__":
        package = list(rel.parts[:-1])
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("spectralearth")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            if not name.startswith("spectralearth"):
                continue
            found.add(name)
            for alias in node.names:
                if module_file(f"{name}.{alias.name}") is not None:
                    found.add(f"{name}.{alias.name}")
    # a package's __init__ runs whenever one of its modules is imported
    parents = {".".join(m.split(".")[:i]) for m in found for i in range(2, m.count(".") + 1)}
    return found | parents


def import_closure(modules: set[str]) -> set[Path]:
    """The source files of ``modules`` and of everything they import, transitively."""
    todo, files = list(modules), set()
    while todo:
        path = module_file(todo.pop())
        if path is None or path in files:
            continue
        files.add(path)
        todo.extend(imported_modules(path))
    return files


# --- the reference code's state dict manifests (../shared/data/.../checkpoints) ----------

REFERENCE_CHECKPOINTS = ("spectralearth_reference", "checkpoints")


def reference_manifests() -> dict:
    """``{"backbones": {name: {key: shape}}, "lightning_modules": {...}}`` (skips if absent)."""
    import json

    path = shared(*REFERENCE_CHECKPOINTS, "reference_state_dict_manifests.json")
    return json.loads(path.read_text())


def fill_manifest(entry: dict, seed: int = 0, dense_limit: int = 40_000_000) -> dict:
    """A state dict of ``entry``'s keys and shapes, every tensor random and different from
    the others. Entries of more than ``dense_limit`` elements get one random value per
    tensor, broadcast (no memory: the 1 B-parameter ViT-g and the Lightning modules)."""
    g = torch.Generator().manual_seed(seed)
    dense = sum(int(np.prod(s)) for s in entry.values()) <= dense_limit
    values = torch.randn(len(entry), generator=g, dtype=torch.float64).float()
    out = {}
    for i, (key, shape) in enumerate(entry.items()):
        if key.endswith("num_batches_tracked"):
            out[key] = torch.tensor(1000 + i)
        elif dense or not shape:
            out[key] = torch.randn(shape, generator=g) if shape else values[i].clone()
        else:
            out[key] = values[i].expand(shape)
    return out


class _Holder(nn.Module):
    pass


def manifest_module(entry: dict) -> nn.Module:
    """A module whose state dict has exactly ``entry``'s keys and shapes (zeros), for a strict
    ``load_state_dict`` check of a state dict against the reference's layout."""
    root = _Holder()
    for key, shape in entry.items():
        *path, name = key.split(".")
        node = root
        for part in path:
            if not hasattr(node, part):
                node.add_module(part, _Holder())
            node = getattr(node, part)
        dtype = torch.long if name == "num_batches_tracked" else torch.float32
        node.register_buffer(name, torch.zeros(shape, dtype=dtype))
    return root


def sha256_file(path: Path) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# --- a fake released SpectralEarth tree (tests/data/release/make_release.py) -------------

MAKE_RELEASE = REPO / "tests" / "data" / "release" / "make_release.py"


def make_release(out: Path, *extra: str) -> dict[str, np.ndarray]:
    """Write the fake released tree; return {relative path: pixels} of its readable files."""
    return runpy.run_path(str(MAKE_RELEASE))["main"]([str(out), *extra])


# --- Dagster: tick sensors and execute what they request, in-process ----------------------


def dagster_tick(defs, instance, sensor: str, cursor: str | None = None, resources=None):
    """One tick of ``sensor`` of ``defs`` against ``instance`` (what the daemon does): its
    dynamic partition requests are applied; returns the tick's SensorExecutionData."""
    import dagster as dg

    sensor_def = defs.resolve_sensor_def(sensor)
    context = dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        repository_def=defs.get_repository_def(),
        resources=resources if resources is not None else defs.resources,
        sensor_name=sensor,
    )
    data = sensor_def.evaluate_tick(context)
    for request in data.dynamic_partitions_requests or []:
        if isinstance(request, dg.AddDynamicPartitionsRequest):
            instance.add_dynamic_partitions(
                request.partitions_def_name, list(request.partition_keys)
            )
    return data


def dagster_execute(defs, instance, run_requests) -> list[tuple[str, object]]:
    """Execute every run in ``run_requests`` in-process, as the daemon would launch them: a
    job's request with its run config checked first (``validate_run_config``), partition key
    and tags; an asset request (automation) with its selection, checks included; a backfill
    request one run per asset partition, parents first. Returns ``[(what, result)]``."""
    import dagster as dg

    assets = list(defs.assets) + list(defs.asset_checks)
    out = []
    for request in run_requests:
        if request.asset_graph_subset is not None:  # a backfill: one run per asset partition
            graph = defs.resolve_asset_graph()
            order = {k: i for i, k in enumerate(graph.toposorted_asset_keys)}
            parts = sorted(
                request.asset_graph_subset.iterate_asset_partitions(),
                key=lambda ap: (order[ap.asset_key], str(ap.partition_key)),
            )
            for ap in parts:
                res = dg.materialize(
                    assets,
                    instance=instance,
                    resources=defs.resources,
                    selection=[ap.asset_key],
                    partition_key=ap.partition_key,
                    tags=dict(request.tags),
                    raise_on_error=False,
                )
                out.append((f"{ap.asset_key.to_user_string()}[{ap.partition_key}]", res))
        elif request.asset_selection is not None:  # automation: assets, checks ride along
            res = dg.materialize(
                assets,
                instance=instance,
                resources=defs.resources,
                selection=list(request.asset_selection),
                partition_key=request.partition_key,
                tags=dict(request.tags),
                raise_on_error=False,
            )
            names = ",".join(k.to_user_string() for k in request.asset_selection)
            out.append((f"{names}[{request.partition_key}]", res))
        else:
            job = defs.resolve_job_def(request.job_name)
            dg.validate_run_config(job, request.run_config)
            res = job.execute_in_process(
                run_config=request.run_config,
                instance=instance,
                partition_key=request.partition_key,
                tags=dict(request.tags),
                raise_on_error=False,
            )
            out.append((f"{request.job_name}[{request.partition_key}]", res))
    return out


def dagster_failures(results) -> list[str]:
    """The failed runs of :func:`dagster_execute`, each with its first step error."""
    failed = []
    for what, res in results:
        if res.success:
            continue
        errors = [e.step_failure_data.error for e in res.all_events if e.is_step_failure]
        failed.append(f"{what}: {errors[0].message.strip() if errors else 'failed'}")
    return failed


def state_dict_sha256(state: dict) -> str:
    """One SHA-256 over a state dict's names, dtypes, shapes and bytes (in name order): equal
    digests mean bitwise-equal weights (e.g. two DDP ranks, or a rank and the safetensors
    file rank 0 published)."""
    import hashlib

    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
