"""Ingest: the synthetic archive (the embedded default) and the scene catalogue.

The catalogue stage writes ``catalog.parquet`` (GeoParquet) where it is told and, in the same
folder, the STAC Collection (``stac/``), the coverage map and scene quicklooks. Rejected
products are rows with their reason; only an unreadable archive folder raises.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from spectralearth.config import SynthSettings
from spectralearth.stages.result import Figure, Markdown, StageResult


@dataclass(frozen=True)
class SynthArchive(StageResult):
    archive: Path
    labels: Path
    products: tuple[Path, ...]

    def metadata(self) -> dict:
        return {"products": len(self.products), "archive": self.archive, "labels": self.labels}

    def summary(self) -> str:
        return (
            f"wrote {len(self.products)} synthetic EnMAP L2A products to {self.archive} "
            f"(class maps in {self.labels})"
        )


def synth_archive(
    settings: SynthSettings, archive: Path, labels: Path, progress: bool = False
) -> SynthArchive:
    """Write the synthetic EnMAP L2A archive to ``archive`` and its class maps (the synthetic
    downstream task's labels) to ``labels``: nothing else is written."""
    from spectralearth.synth import write_archive

    products = write_archive(
        archive,
        labels,
        scenes=settings.scenes,
        size=settings.size,
        seed=settings.seed,
        revisit_fraction=settings.revisit_fraction,
        progress=progress,
    )
    return SynthArchive(Path(archive), Path(labels), tuple(products))


@dataclass(frozen=True)
class Catalog(StageResult):
    path: Path
    archive: Path
    products: int
    ok: tuple[str, ...]
    rejected: tuple[tuple[str, str], ...]  # (scene, reason)
    superseded: int
    stac: Path
    coverage_png: Path
    quicklooks_png: Path
    table_markdown: str = field(repr=False, default="")

    def metadata(self) -> dict:
        return {
            "products": self.products,
            "ok": len(self.ok),
            "rejected": len(self.rejected),
            "superseded": self.superseded,
            "path": self.path,
            "stac": self.stac / "collection.json",
            "coverage_map": Figure(self.coverage_png, "scene coverage"),
            "quicklooks": Figure(self.quicklooks_png, "scene quicklooks"),
            "scenes": Markdown(self.table_markdown),
        }

    def summary(self) -> str:
        lines = [f"REJECTED {scene}: {reason}" for scene, reason in self.rejected]
        lines.append(
            f"catalog: {self.products} products ({len(self.ok)} ok, {len(self.rejected)} "
            f"rejected, {self.superseded} superseded) -> {self.path} "
            f"(+ {self.stac}/collection.json, {self.coverage_png})"
        )
        return "\n".join(lines)


def catalog(archive: Path, out: Path, missing_masks: str = "refuse") -> Catalog:
    """Catalogue ``archive`` into ``out`` (GeoParquet) with STAC and figures beside it;
    ``missing_masks`` (params ``curate.missing_masks``) is what curation will do with a
    product lacking QL layers, so ``ok`` means curation accepts it."""
    from spectralearth.catalog import build_catalog, ok_scenes
    from spectralearth.catalog_table import catalog_table_markdown
    from spectralearth.plots import coverage_map, scene_quicklooks
    from spectralearth.stac import write_stac

    out = Path(out)
    result = build_catalog(archive, out, missing_masks=missing_masks)
    cat = result.catalog
    stac_dir = out.parent / "stac"
    write_stac(cat, stac_dir)
    coverage = coverage_map(cat, out.parent / "coverage.png")
    quicklooks = scene_quicklooks(cat, out.parent / "quicklooks.png")
    return Catalog(
        path=out,
        archive=Path(archive),
        products=len(cat),
        ok=tuple(ok_scenes(cat)),
        rejected=tuple((str(r.scene), str(r.reason)) for r in result.rejected.itertuples()),
        superseded=int((cat["status"] == "superseded").sum()),
        stac=stac_dir,
        coverage_png=Path(coverage),
        quicklooks_png=Path(quicklooks),
        table_markdown=catalog_table_markdown(cat),
    )


def ok_products(catalog_path: Path) -> list[Path]:
    """Product paths with status ok in the catalogue, sorted by scene name."""
    from spectralearth.catalog import read_catalog

    cat = read_catalog(catalog_path)
    return [Path(p) for p in cat.loc[cat["status"] == "ok"].sort_values("scene")["path"]]


def ok_scene_names(catalog_path: Path) -> list[str]:
    """Names of the catalogue's ok products (the scene partitions)."""
    from spectralearth.catalog import ok_scenes, read_catalog

    return ok_scenes(read_catalog(catalog_path))


def ok_scene_keys(catalog_path: Path) -> list[str]:
    """Scene keys of the catalogue's ok products (what scene ids are registered from);
    none without a catalogue."""
    from spectralearth.catalog import read_catalog

    if not Path(catalog_path).is_file():
        return []
    cat = read_catalog(catalog_path)
    return sorted(set(cat.loc[cat["status"] == "ok", "scene_key"].astype(str)))
