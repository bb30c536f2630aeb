"""Scene maps: a whole scene through a trained downstream model (sliding windows, blended
tiles) to a uint8 class map GeoTIFF in the scene's CRS, with a PNG quicklook beside it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from spectralearth.config import PredictSettings, Settings
from spectralearth.layout import EvaluationKey
from spectralearth.profiling import StageUsage, Usage
from spectralearth.stages.result import Figure, StageResult, usage_metadata


@dataclass(frozen=True)
class SceneMap(StageResult):
    scene: str
    out: Path
    model: Path
    height: int
    width: int
    tile: int
    overlap: int
    tiles: int
    masked_pixels: int
    class_pixels: tuple[tuple[str, int], ...]
    seconds: float
    quicklook: Path | None = None
    usage: Usage | None = None

    def metadata(self) -> dict:
        total = max(1, self.height * self.width)
        meta = {
            "map": self.out,
            "model": str(self.model),
            "tiles": self.tiles,
            "masked_share": self.masked_pixels / total,
            **{f"share/{k}": v / total for k, v in self.class_pixels},
            **usage_metadata(self.usage),
        }
        if self.quicklook is not None:
            meta["quicklook"] = Figure(self.quicklook, "class map")
        return meta

    def summary(self) -> str:
        counts = ", ".join(f"{k} {v}" for k, v in self.class_pixels if v)
        return (
            f"{self.scene}: {self.height}x{self.width} px in {self.tiles} tiles of {self.tile} px "
            f"(overlap {self.overlap}), {self.masked_pixels} masked, {self.seconds:.1f} s -> "
            f"{self.out}\n  classes: {counts}"
        )


def default_model(settings: Settings) -> Path:
    """The trained model scene maps use: ``predict.model``, else the trained model of the
    pipeline checkpoint's default evaluation (task, protocol, head, largest label fraction)."""
    if settings.predict.model:
        return model_folder(settings, settings.predict.model)
    e = settings.evaluate
    key = EvaluationKey(
        settings.checkpoint_name(), e.task, e.protocol, e.head, max(e.label_fractions), e.recipe
    )
    return settings.layout.results.trained_model(key)


def model_folder(settings: Settings, model: str) -> Path:
    """A trained model folder: a path, or one relative to the results' ``heads/`` folder."""
    if Path(model).exists():
        return Path(model)
    heads = settings.layout.results.root / "heads"
    if (heads / model).is_dir():
        return heads / model
    raise FileNotFoundError(
        f"trained model {model!r}: not a folder, nor one under {heads} "
        "(`spectralearth evaluate` writes them there)"
    )


def predict(model: Path, scene: Path, out: Path, settings: PredictSettings) -> SceneMap:
    """Map ``scene`` (a product folder/zip or a generic image) with the trained ``model``."""
    from spectralearth.predict import predict_scene

    with StageUsage() as usage:
        info = predict_scene(
            model,
            scene,
            out,
            tile=settings.tile,
            overlap=settings.overlap,
            mask_layers=settings.mask_layers,
            batch_size=settings.batch_size,
            device=settings.device,
        )
    return SceneMap(
        scene=str(info["scene"]),
        out=Path(info["out"]),
        model=Path(model),
        height=int(info["height"]),
        width=int(info["width"]),
        tile=int(info["tile"]),
        overlap=int(info["overlap"]),
        tiles=int(info["tiles"]),
        masked_pixels=int(info["masked_pixels"]),
        class_pixels=tuple(info["class_pixels"].items()),
        seconds=float(info["seconds"]),
        usage=usage.result,
    )


def map_scene(
    scene: str, archive: Path, out: Path, model: Path, settings: PredictSettings
) -> SceneMap:
    """The map of ``scene`` (a name in ``archive``) to ``out`` with a PNG quicklook beside it
    (the Dagster asset ``scene_maps``, one partition; ``spectralearth maps``)."""
    from dataclasses import replace

    from spectralearth.enmap.archive import find_product_path
    from spectralearth.plots import class_map_png

    result = predict(model, find_product_path(archive, scene), out, settings)
    quicklook = class_map_png(result.out, result.out.with_suffix(".png"))
    return replace(result, quicklook=Path(quicklook))
