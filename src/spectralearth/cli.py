"""`spectralearth` command line: one command per stage, each a thin call into
:mod:`spectralearth.stages`.

The commands are a table (:data:`COMMANDS`): each one's arguments sit beside its handler.
Defaults come from params.yaml (``--params``); an argument's ``default_from`` names the
setting its help shows. Heavy imports happen inside handlers so ``--help`` stays fast.
Exit status: 0 done, 1 the stage ran and failed (e.g. a blocking gate, nothing curated) or
an input was refused (the message names it), 2 a bad params value or command line.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from operator import attrgetter
from pathlib import Path

from spectralearth import names
from spectralearth.config import ParamsError, Settings, load_settings


@dataclass(frozen=True)
class Arg:
    flags: tuple[str, ...]
    options: dict = field(default_factory=dict)
    default_from: str | None = None  # a Settings attribute path whose value --help shows


def arg(*flags: str, default_from: str | None = None, **options) -> Arg:
    return Arg(flags, options, default_from)


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    handler: Callable[[argparse.Namespace], int]
    args: tuple[Arg, ...] = ()


COMMANDS: list[Command] = []


def command(name: str, help: str, *args: Arg):
    """Register the decorated ``handler(args) -> exit status`` as ``spectralearth <name>``."""

    def register(handler: Callable[[argparse.Namespace], int]):
        COMMANDS.append(Command(name, help, handler, args))
        return handler

    return register


def _settings(args: argparse.Namespace, **overrides) -> Settings:
    return load_settings(
        getattr(args, "params", None), overrides=overrides, profile=getattr(args, "profile", None)
    )


def _path(value: str | None, default: Path) -> Path:
    return Path(value) if value else Path(default)


# --- ingest ---------------------------------------------------------------------------------


@command(
    "synth-archive",
    "write the synthetic EnMAP L2A archive (the embedded default) and its class maps",
    arg("--out", metavar="ARCHIVE", help="archive folder", default_from="layout.archive"),
    arg(
        "--labels",
        metavar="DIR",
        help="class-map folder (default: params' labels folder, or ARCHIVE/labels with --out)",
    ),
    arg("--scenes", type=int, help="products to write", default_from="synth.scenes"),
    arg("--size", type=int, help="scene size in px", default_from="synth.size"),
    arg("--seed", type=int, help="random seed (same seed, same bytes)", default_from="synth.seed"),
    arg("--quiet", action="store_true", help="no progress bar"),
)
def synth_archive(args) -> int:
    from spectralearth.stages.ingest import synth_archive as run

    s = _settings(args, synth={"scenes": args.scenes, "size": args.size, "seed": args.seed})
    archive = _path(args.out, s.layout.archive)
    # only under the folders it is given: with --out and no --labels, inside --out
    labels = (
        Path(args.labels) if args.labels else (archive / "labels" if args.out else s.layout.labels)
    )
    print(run(s.synth, archive, labels, progress=not args.quiet).summary())
    return 0


@command(
    "catalog",
    "catalogue an archive into GeoParquet + STAC (rejected products listed)",
    arg("archive", nargs="?", help="folder of L2A products", default_from="layout.archive"),
    arg("--out", help="catalogue GeoParquet", default_from="layout.catalog"),
)
def catalog(args) -> int:
    from spectralearth.stages.ingest import catalog as run

    s = _settings(args)
    archive, out = _path(args.archive, s.layout.archive), _path(args.out, s.layout.catalog)
    print(run(archive, out, missing_masks=s.curate.missing_masks).summary())
    return 0


# --- curate ---------------------------------------------------------------------------------


@command(
    "curate",
    "cut products into 202-band patches; build the index, training store and band statistics",
    arg("archive", nargs="?", help="folder of L2A products", default_from="layout.archive"),
    arg("--out", metavar="CURATED_DIR", help="curated folder", default_from="layout.patches"),
    arg("--catalog", help="curate only the ok products of this catalogue"),
    arg("--patch-size", type=int, help="patch size in px", default_from="curate.patch_size"),
    arg(
        "--missing-masks",
        choices=("refuse", "ignore"),
        help="a product without some QL_* layer: refuse it, or curate it with those filters "
        "off (logged)",
        default_from="curate.missing_masks",
    ),
)
def curate(args) -> int:
    from spectralearth.enmap.archive import find_scenes, newest_processings
    from spectralearth.stages.curate import curate_archive
    from spectralearth.stages.ingest import ok_products

    s = _settings(args, curate={"patch_size": args.patch_size, "missing_masks": args.missing_masks})
    archive = _path(args.archive, s.layout.archive)
    if args.catalog:
        products = ok_products(Path(args.catalog))
    else:
        products = newest_processings(find_scenes(archive))
    result = curate_archive(products, _path(args.out, s.layout.patches), s.curate, log=print)
    print(result.totals())
    return 0 if result.ok else 1


@command(
    "validate",
    "run every data-quality gate (Great Expectations suites) on a curated folder",
    arg("--patches", metavar="CURATED_DIR", help="curated folder", default_from="layout.patches"),
    arg(
        "--report",
        metavar="REPORT_DIR",
        help="folder for the reports, the GX project and Data Docs (default: the pipeline's "
        "validation folder for its own curated folder, else CURATED_DIR/validation)",
    ),
)
def validate(args) -> int:
    from spectralearth.stages.validate import default_report_dir
    from spectralearth.stages.validate import validate as run

    s = _settings(args)
    curated = _path(args.patches, s.layout.patches)
    report = Path(args.report) if args.report else default_report_dir(s, curated)
    if report.suffix == ".json":  # the older form named the index report: its folder
        report = report.parent
    result = run(s, curated, report)
    print(result.summary())
    return 0 if result.passed else 1


@command(
    "summary",
    "dataset counts, a map of the locations and RGB quicklooks of a sample of patches",
    arg("--patches", metavar="CURATED_DIR", help="curated folder", default_from="layout.patches"),
    arg("--out", help="summary folder", default_from="layout.summary"),
)
def summary(args) -> int:
    from spectralearth.stages.curate import dataset_summary

    s = _settings(args)
    print(
        dataset_summary(
            _path(args.patches, s.layout.patches), _path(args.out, s.layout.summary)
        ).summary()
    )
    return 0


@command(
    "stats",
    "per-band mean/std of a curated folder's train split (written into the folder)",
    arg("--patches", metavar="CURATED_DIR", help="curated folder", default_from="layout.patches"),
    arg("--out", help="statistics JSON (default: CURATED_DIR/band_stats.json)"),
)
def stats(args) -> int:
    from spectralearth.stages.statistics import band_statistics

    s = _settings(args)
    curated = _path(args.patches, s.layout.patches)
    print(band_statistics(curated, Path(args.out) if args.out else None).summary())
    return 0


@command(
    "index-release",
    "index a released SpectralEarth tree (ROOT/enmap/<location>/<scene>.tif) so that "
    "`pretrain --data ROOT` trains on it without curating",
    arg("root", metavar="ROOT", help="the released tree"),
    arg(
        "--skip-unreadable",
        action="store_true",
        help="leave unreadable files out (listed) instead of refusing the tree",
    ),
    arg("--workers", type=int, default=4, help="reading threads"),
)
def index_release(args) -> int:
    from spectralearth.stages.curate import release_index

    s = _settings(args)
    result = release_index(Path(args.root), s.curate, args.skip_unreadable, args.workers)
    for path, reason in sorted(result.skipped.items()):
        print(f"SKIPPED {path}: {reason}")
    print(result.summary())
    return 0


@command(
    "migrate-store",
    "turn a folder curated with training shards into the single-copy store (checks the two "
    "copies agree, then removes shards/)",
    arg(
        "curated",
        nargs="?",
        metavar="CURATED_DIR",
        help="curated folder",
        default_from="layout.patches",
    ),  # fmt: skip
    arg("--keep-shards", action="store_true", help="keep shards/ after migrating"),
)
def migrate_store(args) -> int:
    from spectralearth.stages.curate import store_migration

    s = _settings(args)
    curated = _path(args.curated, s.layout.patches)
    print(store_migration(curated, s.curate, remove_shards=not args.keep_shards).summary())
    return 0


# --- pretrain -------------------------------------------------------------------------------


@command(
    "pretrain",
    "self-supervised pretraining of an encoder, tracked and registered in MLflow",
    arg("--profile", help="params.yaml pretrain profile", default_from="pretrain.profile"),
    arg(
        "--method",
        choices=names.METHODS,
        help="self-supervised method",
        default_from="pretrain.method",
    ),
    arg(
        "--backbone",
        choices=names.BACKBONES,
        metavar="BACKBONE",
        help=f"encoder ({', '.join(names.ADAPTER_BACKBONES)}, ...)",
        default_from="pretrain.backbone",
    ),
    arg(
        "--data",
        metavar="CURATED_DIR",
        help="curated folder (its own band statistics normalise it)",
        default_from="layout.patches",
    ),
    arg("--stats", help="band statistics JSON, or a folder with mu.npy/sigma.npy, instead"),
    arg(
        "--out",
        metavar="OUT_DIR",
        help="checkpoint folder (model.safetensors, run.json, checkpoints/) "
        "(default: <data_dir>/models/<method>-<backbone>)",
    ),
    arg("--steps", type=int, help="optimizer steps (replaces the profile's length)"),
    arg("--crop-size", type=int, help="random-crop size in px", default_from="pretrain.crop_size"),
    arg("--batch-size", type=int, help="global batch size", default_from="pretrain.batch_size"),
    arg(
        "--resume",
        action="store_true",
        help="continue from OUT_DIR/checkpoints/last.ckpt (profiles with "
        "checkpoint_every_n_steps > 0 write it)",
    ),
)
def pretrain(args) -> int:
    from spectralearth.pipes import dagster_pipes, launched_by_pipes
    from spectralearth.ssl.distributed import is_global_zero, world_size
    from spectralearth.stages.pretrain import pretrain as run

    # launched by the Dagster asset through Pipes (torchrun): rank 0 reports back to it
    with dagster_pipes() as pipes:
        overrides = {
            "steps": args.steps,
            "method": args.method,
            "backbone": args.backbone,
            "crop_size": args.crop_size,
            "batch_size": args.batch_size,
        }
        if args.steps:
            overrides["epochs"] = 0  # --steps replaces a profile's epochs
        s = _settings(args, pretrain=overrides)
        out = _path(args.out, s.layout.checkpoint(s.checkpoint_name()).root)
        if pipes:
            pipes.log(
                f"pretrain: {s.pretrain.method} {s.pretrain.backbone} (profile "
                f"{s.pretrain.profile}) started on {world_size()} processes -> {out}"
            )
        result = run(
            s.pretrain,
            _path(args.data, s.layout.patches),
            out,
            s.tracking,
            stats=Path(args.stats) if args.stats else None,
            resume=args.resume,
            dagster_run_id=pipes.run_id if pipes else None,
            progress=not launched_by_pipes(),  # no progress bars in Dagster's logs
        )
        if is_global_zero():
            print(result.summary(), flush=True)
        if pipes:
            pipes.report(result)
    return 0


@command(
    "import-weights",
    "import a released SpectralEarth backbone (.pth/.pt/.safetensors) or a reference MoCo/DINO/"
    "MAE Lightning .ckpt as a checkpoint folder, registered in MLflow",
    arg("file", help="the weights file"),
    arg(
        "--backbone",
        required=True,
        choices=names.BACKBONES,
        metavar="BACKBONE",
        help=f"its architecture ({', '.join(names.ADAPTER_BACKBONES)}, ...)",
    ),  # fmt: skip
    arg(
        "--part",
        choices=("query", "momentum", "teacher", "student", "encoder"),
        help="which encoder of a Lightning checkpoint (MoCo: query; DINO: teacher; MAE: encoder)",
    ),
    arg(
        "--stats",
        help="band statistics it was normalised with (band_stats.json, or a folder with "
        "mu.npy/sigma.npy such as SpectralEarth's); recorded in run.json",
    ),
    arg("--out", required=True, metavar="OUT_DIR", help="checkpoint folder to write"),
    arg("--force", action="store_true", help="replace OUT_DIR if it holds a checkpoint"),
)
def import_weights(args) -> int:
    from spectralearth.stages.weights import import_weights as run

    s = _settings(args)
    result = run(
        Path(args.file),
        args.backbone,
        Path(args.out),
        s.tracking,
        part=args.part,
        band_stats=args.stats,
        overwrite=args.force,
    )
    print(result.summary())
    return 0


# --- downstream -----------------------------------------------------------------------------


@command(
    "downstream",
    "build the synthetic land-cover task from a curated folder and the generator's class maps",
    arg("--patches", metavar="CURATED_DIR", help="curated folder", default_from="layout.patches"),
    arg("--labels", help="class-map folder", default_from="layout.labels"),
    arg("--out", help="dataset folder (default: <downstream>/<evaluate.task>)"),
)
def downstream(args) -> int:
    from spectralearth.stages.downstream import downstream_dataset

    s = _settings(args)
    out = _path(args.out, s.layout.downstream / s.evaluate.task)
    result = downstream_dataset(
        _path(args.patches, s.layout.patches), _path(args.labels, s.layout.labels), out
    )
    print(result.summary())
    return 0


@command(
    "build-datasets",
    "build downstream datasets (released layout + split files) from curated patches and label "
    "sources; default: all nine from the synthetic sources",
    arg("--patches", metavar="CURATED_DIR", help="curated folder", default_from="layout.patches"),
    arg("--labels", help="class maps of the synthetic sources", default_from="layout.labels"),
    arg("--out", help="output folder", default_from="layout.downstream"),
    arg(
        "--datasets",
        nargs="+",
        choices=names.PAPER_DATASETS,
        metavar="NAME",
        help="which of the nine (default: all)",
    ),
    arg(
        "--source",
        action="append",
        metavar="NAME=PATH[:COLUMN]",
        help="a real label source: raster file or folder of tiles, or polygons with their code "
        "column, e.g. enmap_eurocrops=ec.gpkg:EC_hcat_c (repeatable; replaces the synthetic ones)",
    ),
    arg(
        "--split",
        choices=("random", "block", "scene"),
        help="scheme written to splits/ (every scheme goes to splits/<scheme>/; default: random)",
    ),
    arg("--seed", type=int, help="split seed (default: 0)"),
    arg(
        "--min-coverage",
        type=float,
        help="share of a patch the label source must cover (default: 1.0)",
    ),
    arg(
        "--split-gap",
        action="store_true",
        help="also score the per-pixel forest on the random and the block split "
        "(<out>/split_gap.csv)",
    ),
)
def build_datasets(args) -> int:
    from spectralearth.stages.downstream import build_datasets as run

    s = _settings(args)
    sources = {}
    for spec in args.source or []:
        name, sep, path = spec.partition("=")
        if not sep or not path:
            raise ValueError(f"--source {spec!r}: expected NAME=PATH[:COLUMN]")
        sources[name] = path
    options = {
        k: v
        for k, v in {
            "scheme": args.split,
            "seed": args.seed,
            "min_coverage": args.min_coverage,
        }.items()
        if v is not None
    }
    result = run(
        _path(args.patches, s.layout.patches),
        _path(args.out, s.layout.downstream),
        labels=_path(args.labels, s.layout.labels),
        synth=s.synth,
        sources=sources or None,
        datasets=args.datasets,
        split_gap=args.split_gap,
        **options,
    )
    print(result.summary())
    if result.split_gap_csv is not None:
        print(f"split gap: {result.split_gap_csv}")
    return 0


@command(
    "evaluate",
    "evaluate the checkpoint and the baselines on the downstream task; with --model/--dataset/"
    "--protocol/--head: any model on any dataset",
    arg(
        "--model",
        help="checkpoint folder or file, a folder name under the models folder, the MLflow "
        "registered model (NAME, NAME@ALIAS, NAME/VERSION, models:/NAME@ALIAS), "
        f"'{names.RANDOM_INIT}' or '{names.RANDOM_FOREST}' (default: the pipeline's checkpoint)",
    ),
    arg(
        "--dataset",
        help="registered dataset name (see `spectralearth datasets`) or folder",
        default_from="evaluate.task",
    ),
    arg(
        "--protocol",
        choices=names.PROTOCOLS,
        help="what trains besides the head",
        default_from="evaluate.protocol",
    ),
    arg(
        "--head",
        choices=names.HEADS,
        help="linear: 1x1 conv probe; fcn: FCN head on the Spec-ResNet dilated to stride 1; "
        "upconv: upsampling conv head on ViT tokens; paper: fcn or upconv by backbone",
        default_from="evaluate.head",
    ),
    arg(
        "--recipe",
        help="how the head trains: an entry of evaluate.recipes (cpu: fast, the default of "
        "`make run`; paper: the SpectralEarth reference's downstream protocol)",
        default_from="evaluate.recipe",
    ),
    arg("--baseline", choices=(names.RANDOM_FOREST,), help="the per-pixel random forest instead"),
    arg(
        "--backbone",
        choices=names.BACKBONES,
        metavar="BACKBONE",
        help="architecture of random init",
        default_from="pretrain.backbone",
    ),
    arg("--first-n", type=int, help="encoder stages trained by first-n (default: 2)"),
    arg(
        "--label-fraction",
        type=float,
        nargs="+",
        help="shares of the train split, e.g. 0.01 0.1 1",
        default_from="evaluate.label_fractions",
    ),
    arg("--seed", type=int, nargs="+", help="seeds", default_from="evaluate.seed"),
    arg("--epochs", type=int, help="training epochs", default_from="evaluate.epochs"),
    arg("--splits", help="folder of {train,val,test}.txt (official split lists)"),
    arg("--out", metavar="RESULTS_DIR", help="results folder", default_from="layout.results.root"),
)
def evaluate(args) -> int:
    from spectralearth.layout import ResultsLayout
    from spectralearth.stages.evaluate import EvaluationRequest, benchmark_results, default_requests
    from spectralearth.stages.evaluate import evaluate as run

    s = _settings(args, evaluate={"epochs": args.epochs, "head": args.head, "recipe": args.recipe})
    results = ResultsLayout(_path(args.out, s.layout.results.root))
    one_off = any(
        v is not None
        for v in (
            args.model,
            args.dataset,
            args.protocol,
            args.baseline,
            args.label_fraction,
            args.seed,
            args.first_n,
            args.splits,
        )
    )
    run_args = dict(
        layout=s.layout, results=results, tracking=s.tracking, default_backbone=s.pretrain.backbone
    )
    if not one_off:
        for request in default_requests(s):
            print(
                f"evaluate: {request.model} on {request.dataset} ({request.protocol}, {request.head})",
                flush=True,
            )
            run(request, s.evaluate, **run_args)
        print(benchmark_results(results).summary())
        return 0
    e = s.evaluate
    forest = args.baseline == names.RANDOM_FOREST or args.model == names.RANDOM_FOREST
    request = EvaluationRequest(
        model=names.RANDOM_FOREST
        if forest
        else (args.model or str(s.layout.checkpoint(s.checkpoint_name()).root)),
        dataset=args.dataset or e.task,
        protocol=names.NO_PROTOCOL if forest else (args.protocol or e.protocol),
        head=names.NO_HEAD if forest else (args.head or e.head),
        label_fractions=tuple(args.label_fraction or e.label_fractions),
        seeds=tuple(args.seed or e.seeds),
        backbone=args.backbone,
        first_n=args.first_n,
        split_dir=args.splits,
    )
    print(run(request, e, **run_args).summary())
    benchmark_results(results)
    print(f"  results table: {results.report}")
    return 0


# --- maps -----------------------------------------------------------------------------------


@command(
    "predict",
    "map a whole scene with a trained downstream model (sliding windows) to a GeoTIFF",
    arg(
        "--model",
        required=True,
        help="trained model folder written by `spectralearth evaluate` (under <results>/heads/)",
    ),
    arg(
        "--scene",
        required=True,
        help="L2A product folder or .zip, generic image, or a product name in the archive",
    ),
    arg("--out", required=True, metavar="MAP.tif", help="output GeoTIFF (uint8)"),
    arg("--tile", type=int, help="tile size in px (default: the model's patch size)"),
    arg("--overlap", type=int, help="tile overlap in px (default: a quarter tile)"),
    arg(
        "--mask",
        nargs="*",
        metavar="QL_LAYER",
        help="QL layers masked besides nodata",
        default_from="predict.mask_layers",
    ),
)
def predict(args) -> int:
    from spectralearth.enmap.archive import find_product_path
    from spectralearth.stages.maps import model_folder
    from spectralearth.stages.maps import predict as run

    s = _settings(
        args, predict={"tile": args.tile, "overlap": args.overlap, "mask_layers": args.mask}
    )
    scene = Path(args.scene)
    if not scene.exists() and "/" not in args.scene:
        scene = find_product_path(s.layout.archive, args.scene)
    print(run(model_folder(s, args.model), scene, Path(args.out), s.predict).summary())
    return 0


@command(
    "maps",
    "map every ok scene of the catalogue with the default trained model (params predict) to "
    "<maps>/<scene>.tif + .png, as the Dagster asset scene_maps",
    arg("--catalog", help="catalogue GeoParquet", default_from="layout.catalog"),
    arg("--out", metavar="MAPS_DIR", help="maps folder", default_from="layout.maps"),
)
def maps(args) -> int:
    from spectralearth.stages.ingest import ok_scene_names
    from spectralearth.stages.maps import default_model, map_scene

    s = _settings(args)
    scenes = ok_scene_names(_path(args.catalog, s.layout.catalog))
    out = _path(args.out, s.layout.maps)
    model = default_model(s)
    for i, scene in enumerate(scenes, 1):
        result = map_scene(scene, s.layout.archive, out / f"{scene}.tif", model, s.predict)
        print(f"maps {i}/{len(scenes)}: {scene} -> {result.out}", flush=True)
    print(f"maps: {len(scenes)} scenes mapped with {model}")
    return 0 if scenes else 1


# --- looking at it --------------------------------------------------------------------------


@command("datasets", "list every downstream dataset the project knows")
def datasets(args) -> int:
    import pandas as pd

    from spectralearth.downstream.datasets.registry import describe_datasets

    s = _settings(args)
    print(pd.DataFrame(describe_datasets(s.layout.downstream)).to_string(index=False))
    return 0


@command("report", "print the results table and where to look")
def report(args) -> int:
    from spectralearth.stages.evaluate import results_table

    s = _settings(args)
    print(results_table(s.layout.results))
    print(
        "\nWhere to look:\n"
        f"  outputs        {s.layout.data_dir}/ (archive, catalog, patches, models, results)\n"
        f"  results table  {s.layout.results.all_rows}\n"
        f"  Dagster UI     make ui  -> http://127.0.0.1:3000 (DAGSTER_HOME={s.layout.dagster_home})\n"
        f"  MLflow UI      make ui  -> http://127.0.0.1:5000 (store {s.tracking.uri})\n"
        "  DVC            dvc status / dvc repro"
    )
    return 0


@command(
    "ui",
    "start the Dagster UI and the MLflow UI (127.0.0.1 by default)",
    arg(
        "--host",
        default="127.0.0.1",
        help="bind address; keep 127.0.0.1 unless you mean to expose them (default: 127.0.0.1)",
    ),
    arg("--dagster-port", type=int, default=3000, help="Dagster webserver port (default: 3000)"),
    arg("--mlflow-port", type=int, default=5000, help="MLflow UI port (default: 5000)"),
)
def ui(args) -> int:
    from spectralearth.services import serve_uis

    return serve_uis(_settings(args), args.host, args.dagster_port, args.mlflow_port)


# --- the parser -----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """Options default to None and are resolved from the chosen params.yaml at run time;
    the help shows the values of the default params.yaml."""
    try:
        defaults = load_settings()
    except Exception:  # --help must work even with a broken params.yaml
        defaults = None

    parser = argparse.ArgumentParser(
        prog="spectralearth",
        description="EnMAP L2A scenes -> curated patches -> hyperspectral foundation models -> benchmarks.",
    )
    parser.add_argument(
        "--params", help="params.yaml to read (default: ./params.yaml or the repo's)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for cmd in COMMANDS:
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        p.set_defaults(func=cmd.handler)
        for a in cmd.args:
            options = dict(a.options)
            if a.default_from and defaults is not None:
                try:
                    value = attrgetter(a.default_from)(defaults)
                except AttributeError:
                    value = None
                value = list(value) if isinstance(value, tuple) else value
                options["help"] = options.get("help", "") + f" (default: {value})"
            p.add_argument(*a.flags, **options)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ParamsError as exc:
        print(f"spectralearth {args.command}: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # one readable line; SPECTRALEARTH_DEBUG=1 shows the traceback
        print(f"spectralearth {args.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
        if os.environ.get("SPECTRALEARTH_DEBUG"):
            raise
        return 1


if __name__ == "__main__":
    sys.exit(main())
