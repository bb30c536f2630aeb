"""`spectralearth` command line: one command per stage, each a thin call into the library.

Defaults come from params.yaml (see `--params`); heavy imports happen inside commands so
`--help` stays fast.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from spectralearth.config import HEADS, PROTOCOLS, load_settings

# spectralearth.ssl.list_methods(), spelt out so that --help does not import torch
METHOD_NAMES = ("moco", "dino", "mae")


def _settings(args, **overrides):
    return load_settings(
        getattr(args, "params", None), overrides=overrides, profile=getattr(args, "profile", None)
    )


def cmd_synth_archive(args) -> int:
    from spectralearth import pipeline

    s = _settings(args, synth={"scenes": args.scenes, "size": args.size, "seed": args.seed})
    out = Path(args.out) if args.out else s.paths.archive
    labels = Path(args.labels) if args.labels else s.paths.labels
    paths = pipeline.synth_archive(s, out=out, progress=not args.quiet, labels=labels)
    print(f"wrote {len(paths)} synthetic EnMAP L2A products to {out} (labels in {labels})")
    return 0


def cmd_catalog(args) -> int:
    from spectralearth import pipeline

    s = _settings(args)
    archive = Path(args.archive) if args.archive else s.paths.archive
    out = Path(args.out) if args.out else s.paths.catalog
    try:
        res = pipeline.catalog(s, archive, out)
    except FileNotFoundError as exc:
        print(f"spectralearth catalog: {exc}", file=sys.stderr)
        return 2
    for r in res.rejected.itertuples():
        print(f"REJECTED {r.scene}: {r.reason}")
    counts = res.catalog["status"].value_counts().to_dict()
    print(
        f"catalog: {len(res.catalog)} products ({counts}) -> {out} "
        f"(+ {out.parent / 'stac'}/collection.json, {out.parent / 'coverage.png'})"
    )
    return 0


def cmd_curate(args) -> int:
    from spectralearth import pipeline
    from spectralearth.enmap.archive import find_scenes, newest_processings

    s = _settings(args, curate={"patch_size": args.patch_size})
    archive = Path(args.archive) if args.archive else s.paths.archive
    out = Path(args.out) if args.out else s.paths.patches
    if args.catalog:
        products = pipeline.scenes_to_curate(s, Path(args.catalog))
    else:
        products = newest_processings(find_scenes(archive))
    summary = pipeline.curate_archive(s, products, out)
    print(
        f"curate: {summary['patches']} patches at {summary['locations']} locations from "
        f"{len(summary['scenes'])} scenes ({len(summary['failed'])} failed) -> {out}"
    )
    return 0 if summary["scenes"] else 1


def cmd_validate(args) -> int:
    from spectralearth import pipeline

    s = _settings(args)
    reports = pipeline.validate(
        s,
        Path(args.patches) if args.patches else None,
        Path(args.report) if args.report else None,
    )
    for r in reports.values():
        print(("WARNING " if not (r.blocking or r.success) else "") + r.summary())
    docs = next((r.docs for r in reports.values() if r.docs), None)
    if docs:
        print(f"data docs: {docs}")
    return 0 if all(r.success for r in reports.values() if r.blocking) else 1


def cmd_summary(args) -> int:
    from spectralearth import pipeline

    s = _settings(args)
    out = Path(args.out) if args.out else s.paths.data_dir / "summary"
    info = pipeline.dataset_summary(s, Path(args.patches) if args.patches else None, out)
    print(f"summary: {json.dumps(info)} (+ {out / 'quicklooks.png'})")
    return 0


def cmd_stats(args) -> int:
    from spectralearth import pipeline

    s = _settings(args)
    stats = pipeline.band_statistics(
        s, Path(args.patches) if args.patches else None, Path(args.out) if args.out else None
    )
    print(
        f"band statistics over {stats['n_patches']} patches ({stats['split']}) -> {args.out or s.paths.stats}"
    )
    return 0


def cmd_pretrain(args) -> int:
    from spectralearth import pipeline

    overrides = {"steps": args.steps, "method": args.method, "backbone": args.backbone}
    if args.steps:
        overrides["epochs"] = 0  # --steps replaces a profile's epochs
    s = _settings(args, pretrain=overrides)
    info = pipeline.pretrain(
        s,
        Path(args.data) if args.data else None,
        out=Path(args.out) if args.out else None,
        stats_path=Path(args.stats) if args.stats else None,
        resume=args.resume,
    )
    loss = info["final_loss"]
    print(
        f"pretrain: {info['method']} {info['backbone']} {info['steps']} steps, final loss "
        f"{'n/a' if loss is None else f'{loss:.4f}'}, registered {info['model_name']} "
        f"v{info['model_version']} -> {info['checkpoint']}"
    )
    return 0


def cmd_downstream(args) -> int:
    from spectralearth import pipeline

    s = _settings(args)
    info = pipeline.downstream_dataset(s)
    print(f"downstream dataset {s.evaluate.task}: {json.dumps(info, default=str)[:300]}")
    return 0


def cmd_build_datasets(args) -> int:
    from spectralearth import pipeline

    s = _settings(args)
    sources = dict(kv.split("=", 1) for kv in args.source or [])
    options = {
        k: v
        for k, v in {
            "scheme": args.split,
            "seed": args.seed,
            "min_coverage": args.min_coverage,
        }.items()
        if v is not None
    }
    out = Path(args.out) if args.out else s.paths.downstream
    reports = pipeline.build_downstream(
        s,
        Path(args.patches) if args.patches else None,
        out,
        sources or None,
        args.datasets,
        **options,
    )
    for name, r in reports.items():
        print(
            f"{name}: kept {r['kept']} of {r['patches']} patches ({r['not_covered']} not covered, "
            f"{r['no_labels']} without a kept code), splits {r['splits']} ({r['split_scheme']}) "
            f"-> {r['out_dir']}"
        )
    if args.split_gap:
        import pandas as pd

        from spectralearth.downstream.splits import split_gap

        gaps = pd.concat([split_gap(Path(r["out_dir"])) for r in reports.values()])
        from spectralearth.io import atomic_write_text

        atomic_write_text(out / "split_gap.csv", gaps.to_csv(index=False))
        print(
            gaps[["dataset", "metric", "random", "blocked", "gap"]].round(4).to_string(index=False)
        )
    return 0


def cmd_evaluate(args) -> int:
    from spectralearth import pipeline

    s = _settings(args, evaluate={"epochs": args.epochs, "head": args.head})
    options = {
        k: v
        for k, v in {
            "protocol": args.protocol,
            "baseline": args.baseline,
            "backbone": args.backbone,
            "label_fractions": tuple(args.label_fraction) if args.label_fraction else None,
            "seeds": tuple(args.seed) if args.seed else None,
            "first_n": args.first_n,
            "split_dir": args.splits,
            "allow_band_mismatch": args.allow_band_mismatch or None,
        }.items()
        if v is not None
    }
    if args.model is None and args.dataset is None and not options:
        pipeline.evaluate(s)  # the pipeline stage: checkpoint vs random init, MLflow run
        print(pipeline.results_table(s))
        return 0
    rows = pipeline.evaluate(
        s, args.model, args.dataset, Path(args.out) if args.out else None, **options
    )
    test = rows[rows["split"] == "test"]
    table = test.pivot_table(
        index=["model", "protocol", "head", "label_fraction", "seed"],
        columns="metric",
        values="value",
    )
    print(table.round(4).to_string())
    return 0


def cmd_predict(args) -> int:
    from spectralearth import pipeline

    s = _settings(
        args, predict={"tile": args.tile, "overlap": args.overlap, "mask_layers": args.mask}
    )
    info = pipeline.predict(s, args.model, args.scene, Path(args.out))
    counts = ", ".join(f"{k} {v}" for k, v in info["class_pixels"].items() if v)
    print(
        f"{info['scene']}: {info['height']}x{info['width']} px in {info['tiles']} tiles of "
        f"{info['tile']} px (overlap {info['overlap']}), {info['masked_pixels']} masked, "
        f"{info['seconds']:.1f} s -> {info['out']}\n  classes: {counts}"
    )
    return 0


def cmd_maps(args) -> int:
    from spectralearth import pipeline

    s = _settings(args)
    scenes = pipeline.scenes_to_map(s, Path(args.catalog) if args.catalog else None)
    for i, scene in enumerate(scenes, 1):
        info = pipeline.map_scene(s, scene)
        print(f"maps {i}/{len(scenes)}: {scene} -> {info['out']}", flush=True)
    print(f"maps: {len(scenes)} scenes mapped")
    return 0 if scenes else 1


def cmd_datasets(args) -> int:
    import pandas as pd

    from spectralearth.downstream.datasets.registry import describe_datasets

    s = _settings(args)
    rows = pd.DataFrame(describe_datasets(s.paths.downstream))
    print(rows.to_string(index=False))
    return 0


def cmd_report(args) -> int:
    from spectralearth import pipeline

    s = _settings(args)
    print(pipeline.results_table(s))
    root = s.params_file.parent
    print(
        "\nWhere to look:\n"
        f"  outputs        {s.paths.data_dir}/ (archive, catalog, patches, models, results)\n"
        f"  results table  {s.paths.results / 'evaluations.csv'}\n"
        f"  Dagster UI     make ui  -> http://127.0.0.1:3000 (DAGSTER_HOME={root / 'data/dagster_home'})\n"
        f"  MLflow UI      make ui  -> http://127.0.0.1:5000 (store {s.paths.mlflow_uri})\n"
        "  DVC            dvc status / dvc repro"
    )
    return 0


def cmd_ui(args) -> int:
    import contextlib
    import signal
    import subprocess

    s = _settings(args)
    env = dict(os.environ, DAGSTER_HOME=str(s.paths.dagster_home.resolve()))
    s.paths.dagster_home.mkdir(parents=True, exist_ok=True)
    s.paths.mlflow_dir.mkdir(parents=True, exist_ok=True)

    def spawn(cmd: list[str]) -> subprocess.Popen:
        # Own session (so the whole server tree can be stopped) and default SIGINT: shells
        # start background jobs with SIGINT ignored, which children would inherit.
        return subprocess.Popen(
            cmd,
            env=env,
            start_new_session=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )

    procs = [
        spawn(
            [
                sys.executable,
                "-m",
                "dagster",
                "dev",
                "-m",
                "dagster_project.definitions",
                "-h",
                args.host,
                "-p",
                str(args.dagster_port),
            ]
        ),
        spawn(
            [
                sys.executable,
                "-m",
                "mlflow",
                "ui",
                "--backend-store-uri",
                s.paths.mlflow_uri,
                "--host",
                args.host,
                "--port",
                str(args.mlflow_port),
                "--workers",  # one local user: MLflow's default 4 take minutes to start on 2 cores
                "1",
            ]
        ),
    ]
    print(
        f"Dagster UI: http://{args.host}:{args.dagster_port}\nMLflow UI:  http://{args.host}:{args.mlflow_port}\n(Ctrl-C stops both)"
    )

    def _interrupt(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops both servers, like Ctrl-C
    try:
        for p in procs:
            p.wait()
    except KeyboardInterrupt:
        for p in procs:
            p.send_signal(signal.SIGTERM)  # Dagster maps SIGTERM to its graceful shutdown
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)  # whatever of the tree is left
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Options default to None and are resolved from the chosen params.yaml at run time;
    the help shows the values of the default params.yaml."""
    try:
        d = load_settings()
    except Exception:  # --help must work even with a broken params.yaml
        d = None

    def shown(value) -> str:
        return f" (default: {value})" if d is not None else ""

    parser = argparse.ArgumentParser(
        prog="spectralearth",
        description="EnMAP L2A scenes -> curated patches -> hyperspectral foundation models -> benchmarks.",
    )
    parser.add_argument(
        "--params", help="params.yaml to read (default: ./params.yaml or the repo's)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, fn, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(func=fn)
        return p

    p = add(
        "synth-archive",
        cmd_synth_archive,
        "write the synthetic EnMAP L2A archive (the embedded default)",
    )
    p.add_argument("--out", help="archive folder" + shown(d and d.paths.archive))
    p.add_argument("--labels", help="class maps folder" + shown(d and d.paths.labels))
    p.add_argument("--scenes", type=int, help="products to write" + shown(d and d.synth.scenes))
    p.add_argument("--size", type=int, help="scene size in px" + shown(d and d.synth.size))
    p.add_argument(
        "--seed", type=int, help="random seed (same seed, same bytes)" + shown(d and d.synth.seed)
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = add(
        "catalog", cmd_catalog, "catalogue an archive into GeoParquet (rejected products listed)"
    )
    p.add_argument(
        "archive", nargs="?", help="folder of L2A products" + shown(d and d.paths.archive)
    )
    p.add_argument("--out", help="catalogue GeoParquet" + shown(d and d.paths.catalog))

    p = add("curate", cmd_curate, "cut products into 202-band patches, index and training shards")
    p.add_argument(
        "archive", nargs="?", help="folder of L2A products" + shown(d and d.paths.archive)
    )
    p.add_argument("--out", help="patches folder" + shown(d and d.paths.patches))
    p.add_argument("--catalog", help="curate only the ok products of this catalogue")
    p.add_argument(
        "--patch-size", type=int, help="patch size in px" + shown(d and d.curate.patch_size)
    )

    p = add("validate", cmd_validate, "run the Great Expectations suite on the patch index")
    p.add_argument("--patches", help="patches folder" + shown(d and d.paths.patches))
    p.add_argument(
        "--report",
        help="validation report JSON" + shown(d and d.paths.validation / "patch_index.json"),
    )

    p = add("summary", cmd_summary, "dataset counts and RGB quicklooks of a sample of patches")
    p.add_argument("--patches", help="patches folder" + shown(d and d.paths.patches))
    p.add_argument("--out", help="summary folder" + shown(d and d.paths.data_dir / "summary"))

    p = add("stats", cmd_stats, "per-band mean/std of the training patches")
    p.add_argument("--patches", help="patches folder" + shown(d and d.paths.patches))
    p.add_argument("--out", help="statistics JSON" + shown(d and d.paths.stats))

    p = add(
        "pretrain", cmd_pretrain, "self-supervised pretraining, tracked and registered in MLflow"
    )
    p.add_argument(
        "--profile", help="params.yaml pretrain profile" + shown(d and d.pretrain.profile)
    )
    p.add_argument(
        "--method",
        choices=METHOD_NAMES,
        help="self-supervised method" + shown(d and d.pretrain.method),
    )
    p.add_argument(
        "--backbone",
        help="encoder (spec_resnet18/50, spec_vit_tiny/small/base, ...)"
        + shown(d and d.pretrain.backbone),
    )
    p.add_argument(
        "--data",
        metavar="CURATED_DIR",
        help="curated patches folder holding shards/" + shown(d and d.paths.patches),
    )
    p.add_argument("--stats", help="band statistics JSON" + shown(d and d.paths.stats))
    p.add_argument(
        "--out",
        metavar="OUT_DIR",
        help="output folder (model.safetensors, run.json, checkpoints/)"
        + shown(d and d.paths.models / "<method>-<backbone>"),
    )
    p.add_argument(
        "--steps",
        type=int,
        help="override the profile's length in optimizer steps" + shown(d and d.pretrain.steps),
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from OUT_DIR/checkpoints/last.ckpt (profiles with "
        "checkpoint_every_n_steps > 0 write it)",
    )

    add("downstream", cmd_downstream, "build the downstream dataset from patches and label maps")
    p = add(
        "evaluate",
        cmd_evaluate,
        "evaluate the checkpoint against random init on the downstream task; with --model/"
        "--dataset/--protocol/--baseline: any model on any dataset under any protocol",
    )
    p.add_argument(
        "--model",
        help="checkpoint folder or model.safetensors, a folder name under the models folder, "
        "the MLflow registered model (NAME, NAME@ALIAS, NAME/VERSION) or 'random' "
        "(default: the pipeline's checkpoint)",
    )
    p.add_argument(
        "--dataset",
        help="registered dataset name (see `spectralearth datasets`) or folder, e.g. "
        "../shared/data/enmap_potsdam" + shown(d and d.evaluate.task),
    )
    p.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        help="what trains besides the head" + shown(d and d.evaluate.protocol),
    )
    p.add_argument(
        "--head",
        choices=HEADS,
        help="linear: 1x1 conv probe; fcn: FCN head on the Spec-ResNet dilated to stride 1; "
        "upconv: upsampling conv head on ViT tokens; paper: fcn or upconv by backbone "
        "(multi-label tasks: always linear)" + shown(d and d.evaluate.head),
    )
    p.add_argument("--baseline", choices=("rf",), help="per-pixel random forest instead")
    p.add_argument("--backbone", help="architecture for --model random (default: pretrain's)")
    p.add_argument("--first-n", type=int, help="encoder stages trained by first-n (default: 2)")
    p.add_argument(
        "--label-fraction",
        type=float,
        nargs="+",
        help="fractions of the train split, e.g. 0.01 0.1 1 (default: 1)",
    )
    p.add_argument("--seed", type=int, nargs="+", help="seeds" + shown(d and d.evaluate.seed))
    p.add_argument("--epochs", type=int, help="training epochs" + shown(d and d.evaluate.epochs))
    p.add_argument("--splits", help="folder of {train,val,test}.txt (official split lists)")
    p.add_argument(
        "--allow-band-mismatch",
        action="store_true",
        help="run a checkpoint's spectral adapter on a dataset with another band count",
    )
    p.add_argument(
        "--out", help="results CSV (default: <results>/evaluate-<dataset>-<protocol>.csv)"
    )
    p = add(
        "predict",
        cmd_predict,
        "map a whole scene with a trained downstream model (sliding windows) to a GeoTIFF",
    )
    p.add_argument(
        "--model",
        required=True,
        help="trained model folder written by `spectralearth evaluate` (under "
        "<results>/heads/), or a folder name there",
    )
    p.add_argument(
        "--scene",
        required=True,
        help="L2A product folder or .zip, generic image, or a product name in the archive",
    )
    p.add_argument("--out", required=True, metavar="MAP.tif", help="output GeoTIFF (uint8)")
    p.add_argument("--tile", type=int, help="tile size in px (default: the model's patch size)")
    p.add_argument("--overlap", type=int, help="tile overlap in px (default: a quarter tile)")
    p.add_argument(
        "--mask",
        nargs="*",
        metavar="QL_LAYER",
        help="QL layers masked besides nodata" + shown(d and list(d.predict.mask_layers)),
    )
    p = add(
        "maps",
        cmd_maps,
        "map every ok scene of the catalogue with the default trained model (params predict) "
        "to <data>/maps/<scene>.tif + .png, as the Dagster asset scene_maps",
    )
    p.add_argument("--catalog", help="catalogue GeoParquet" + shown(d and d.paths.catalog))
    p = add(
        "build-datasets",
        cmd_build_datasets,
        "build downstream datasets (released layout + split files) from curated patches and "
        "label sources; default: all nine from the synthetic sources",
    )
    p.add_argument("--patches", help="curated patches folder" + shown(d and d.paths.patches))
    p.add_argument("--out", help="output folder" + shown(d and d.paths.downstream))
    p.add_argument("--datasets", nargs="+", help="which of the nine (default: all)")
    p.add_argument(
        "--source",
        action="append",
        metavar="NAME=PATH[:COLUMN]",
        help="a real label source: raster file or folder of tiles, or polygons with their code "
        "column, e.g. enmap_eurocrops=ec.gpkg:EC_hcat_c (repeatable; replaces the synthetic ones)",
    )
    p.add_argument(
        "--split",
        choices=("random", "block", "scene"),
        help="scheme written to splits/ (every scheme goes to splits/<scheme>/; default: random)",
    )
    p.add_argument("--seed", type=int, help="split seed (default: 0)")
    p.add_argument(
        "--min-coverage",
        type=float,
        help="share of a patch the label source must cover (default: 1.0)",
    )
    p.add_argument(
        "--split-gap",
        action="store_true",
        help="also score the per-pixel RF on the random and the block split; writes "
        "<out>/split_gap.csv",
    )
    add("datasets", cmd_datasets, "list every downstream dataset the project knows")
    add("report", cmd_report, "print the results table and where to look")

    p = add("ui", cmd_ui, "start the Dagster UI and the MLflow UI (127.0.0.1 by default)")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="bind address; keep 127.0.0.1 unless you mean to expose them (default: 127.0.0.1)",
    )
    p.add_argument(
        "--dagster-port", type=int, default=3000, help="Dagster webserver port (default: 3000)"
    )
    p.add_argument("--mlflow-port", type=int, default=5000, help="MLflow UI port (default: 5000)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except Exception as exc:  # one readable line; SPECTRALEARTH_DEBUG=1 shows the traceback
        print(f"spectralearth {args.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
        if os.environ.get("SPECTRALEARTH_DEBUG"):
            raise
        return 1


if __name__ == "__main__":
    sys.exit(main())
