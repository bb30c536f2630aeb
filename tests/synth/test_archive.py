"""Synthetic EnMAP L2A archive: format round-trip, determinism, masks and spectral realism."""

from __future__ import annotations

import json
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
import rasterio
from defusedxml import ElementTree as SafeET
from scipy import ndimage
from shapely.geometry import Point, Polygon

from spectralearth.bands import enmap_nominal, nearest_band, select_view
from spectralearth.enmap.archive import find_products
from spectralearth.enmap.l2a import PRODUCT_NAME_RE, open_product
from spectralearth.enmap.scene import NODATA, QL_LAYERS
from spectralearth.synth import (
    LANDCOVER_CLASSES,
    class_ids,
    classmap_path,
    load_library,
    plan_acquisitions,
    write_archive,
)
from tests.helpers import SHARED_DATA

SHARED = SHARED_DATA
SIZE = 64
CLASS = {name: i + 1 for i, name in enumerate(LANDCOVER_CLASSES)}
COVER_LAYERS = {
    "cloudCover": "QL_QUALITY_CLOUD",
    "hazeCover": "QL_QUALITY_HAZE",
    "cirrusCover": "QL_QUALITY_CIRRUS",
    "snowCover": "QL_QUALITY_SNOW",
    "cloudShadow": "QL_QUALITY_CLOUDSHADOW",
}


class Scene:
    """One written product, read back through the pipeline's reader."""

    def __init__(self, path: Path):
        self.path = path
        self.product = open_product(path)
        self.meta = self.product.meta
        self.raw = self.product.read()
        self.refl = self.product.read_reflectance()
        self.masks = {k: self.product.read_mask(k) for k in QL_LAYERS}
        with rasterio.open(self.product.image_path) as src:
            self.profile = dict(src.profile)
            self.band_tags = [src.tags(i + 1) for i in range(src.count)]
        with rasterio.open(classmap_path(path.parent.parent / "labels", path)) as src:
            self.classmap = src.read(1)
            self.classmap_profile = dict(src.profile)
        self.valid = self.raw[0] != NODATA
        self.wl = self.meta.wavelengths
        self.flagged = np.any([m for m in self.masks.values()], axis=0)
        self.clear = self.valid & ~self.flagged

    def band(self, nm: float) -> np.ndarray:
        return self.refl[nearest_band(self.wl, nm)]


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "archive"
    paths = write_archive(out, out.parent / "labels", scenes=6, size=SIZE, seed=7)
    assert len(paths) == 6
    return out


@pytest.fixture(scope="module")
def scenes(archive) -> list[Scene]:
    return [Scene(p) for p in find_products(archive)]


def _pooled(scenes: list[Scene], select, nm: float) -> np.ndarray:
    return np.concatenate([s.band(nm)[select(s)] for s in scenes])


# --------------------------------------------------------------------------- format


def test_every_product_opens_and_metadata_matches_raster(scenes):
    nominal = enmap_nominal()
    assert len(scenes) == 6
    for s in scenes:
        assert PRODUCT_NAME_RE.match(s.path.name)
        assert s.meta.processor_version == "01.04.00"
        assert s.raw.shape == (224, SIZE, SIZE) and s.raw.dtype == np.int16
        assert len(s.meta.wavelengths) == s.raw.shape[0]
        assert np.all(np.diff(s.meta.wavelengths) > 0)
        np.testing.assert_allclose(s.meta.wavelengths, nominal.wavelengths, atol=0.01)
        np.testing.assert_allclose(s.meta.fwhms, nominal.fwhms, atol=0.01)
        np.testing.assert_allclose(s.meta.gains, 1e-4)
        np.testing.assert_allclose(s.meta.offsets, 0.0)
        assert not s.meta.bad_bands.any()
        assert len(s.meta.vnir_channels) + len(s.meta.swir_channels) == 224
        assert set(s.product.ql_paths) == set(QL_LAYERS)
        # band tags carry wavelength and FWHM in file order
        tag_wl = np.array([float(t["wavelength"]) for t in s.band_tags])
        np.testing.assert_allclose(tag_wl, s.meta.wavelengths, atol=0.01)
        assert all("fwhm" in t for t in s.band_tags)
        p = s.profile
        assert p["nodata"] == NODATA and p["tiled"]
        assert p["transform"].a == 30.0 and p["transform"].e == -30.0
        assert p["transform"].c % 30 == 0 and p["transform"].f % 30 == 0
        epsg = p["crs"].to_epsg()
        assert 32601 <= epsg <= 32660
        assert s.meta.projection == f"UTM_Zone{epsg - 32600}_North"
        assert s.meta.start_time < s.meta.stop_time
        n = PRODUCT_NAME_RE.match(s.path.name).groupdict()
        assert s.meta.start_time.strftime("%Y%m%dT%H%M%S") == n["start"]
        assert s.meta.datatake_id == n["datatake"]
        assert int(s.meta.tile_id) == int(n["tile"])


def test_ql_masks_share_the_image_grid(scenes):
    for s in scenes:
        for layer, path in s.product.ql_paths.items():
            with rasterio.open(path) as src:
                assert src.count == 1 and src.dtypes[0] == "uint8", layer
                assert src.transform == s.profile["transform"] and src.crs == s.profile["crs"]
                assert set(np.unique(src.read())) <= {0, 1}


def test_footprint_in_xml_encloses_valid_pixels(scenes):
    from pyproj import Transformer

    for s in scenes:
        fp = s.meta.footprint_lonlat
        assert len(fp) == 5 and fp[0] == fp[-1]  # four corners + closing point
        assert all(44 < lat < 57 and -6 < lon < 27 for lon, lat in fp)
        to_map = Transformer.from_crs(4326, s.profile["crs"].to_epsg(), always_xy=True)
        poly = Polygon([to_map.transform(lon, lat) for lon, lat in fp])
        t = s.profile["transform"]
        rows, cols = np.nonzero(s.valid)
        xs, ys = t * (cols + 0.5, rows + 0.5)
        grown = poly.buffer(1.0)
        assert all(grown.contains(Point(x, y)) for x, y in zip(xs, ys, strict=True))
        # the swath area equals the count of valid pixels (up to the pixelated rim)
        area_px = poly.area / 900.0
        assert abs(area_px - s.valid.sum()) < 0.03 * area_px + 10


def test_xml_structure_and_file_list(scenes):
    for s in scenes:
        xml = next(s.path.glob("*-METADATA.XML"))
        root = SafeET.parse(str(xml), forbid_dtd=True).getroot()
        assert root.tag == "level_X"
        for path in (
            "metadata/schema/versionSchema",
            "processing/correctionType",
            "base/spatialCoverage/boundingPolygon",
            "base/temporalCoverage/startTime",
            "specific/qualityFlag/cloudCover",
            "specific/qualityFlag/waterCover",
            "specific/vnirProductQuality/numChannelsExpected",
            "specific/swirProductQuality/expectedChannelsList",
            "specific/datatakeID",
            "specific/tileID",
            "specific/pixelSize",
            "specific/widthOfScene",
            "specific/heightOfScene",
            "product/image/merge/dimension/columns",
            "product/ortho/projection",
            "product/bandStatistics/bandID/stdDeviation",
        ):
            assert root.find(path) is not None, path
        centre = [
            p
            for p in root.findall("base/spatialCoverage/boundingPolygon/point")
            if p.findtext("frame") == "center"
        ]
        assert len(centre) == 1
        listed = {
            f.findtext("name"): int(f.findtext("size"))
            for f in root.findall("product/productFileInformation/file")
        }
        on_disk = {p.name: p.stat().st_size for p in s.path.iterdir()}
        assert set(listed) == set(on_disk)
        for name, kb in listed.items():
            assert kb == -(-on_disk[name] // 1024), name
        assert int(root.findtext("base/size")) == sum(on_disk.values())
        # band statistics are the reflectance of the valid pixels
        means = np.array(
            [float(b.findtext("mean")) for b in root.findall("product/bandStatistics/bandID")]
        )
        for b in (10, 60, 150):
            expect = s.raw[b][s.valid].astype(float).mean() * 1e-4
            assert means[b] == pytest.approx(expect, abs=1e-6)


def test_class_maps_and_classes_json(archive, scenes):
    classes = json.loads((archive.parent / "labels" / "classes.json").read_text())
    assert classes == {str(k): v for k, v in class_ids().items()}
    assert list(classes.values()) == list(LANDCOVER_CLASSES)
    assert "0" not in classes
    for s in scenes:
        cp = s.classmap_profile
        assert cp["dtype"] == "uint8" and cp["nodata"] == 0
        assert cp["transform"] == s.profile["transform"] and cp["crs"] == s.profile["crs"]
        assert (cp["width"], cp["height"]) == (SIZE, SIZE)
        assert np.all((s.classmap == 0) == ~s.valid)
        assert s.classmap.max() <= len(LANDCOVER_CLASSES)


def test_nodata_border_in_every_band_and_masks_zero_there(scenes):
    for s in scenes:
        invalid = ~s.valid
        for r, c in ((0, 0), (0, SIZE - 1), (SIZE - 1, 0), (SIZE - 1, SIZE - 1)):
            assert invalid[r, c]
        assert np.all(s.raw[:, invalid] == NODATA)
        assert not np.any(s.raw[:, s.valid] == NODATA)
        for layer, m in s.masks.items():
            assert not m[invalid].any(), layer
        assert 0.5 < s.valid.mean() < 0.85


def test_xml_cover_percentages_equal_mask_fractions(scenes):
    for s in scenes:
        n_valid = s.valid.sum()
        for key, layer in COVER_LAYERS.items():
            frac = 100.0 * s.masks[layer][s.valid].sum() / n_valid
            assert abs(s.meta.cover[key] - frac) <= 0.5 + 1e-9, (s.path.name, key)
            assert s.meta.cover[key] == int(s.meta.cover[key])


# --------------------------------------------------------------------------- archive layout


def test_several_utm_zones_and_a_revisited_place(scenes):
    from pyproj import Transformer

    zones = {s.profile["crs"].to_epsg() for s in scenes}
    assert len(zones) >= 2
    revisits = 0
    for a, b in combinations(scenes, 2):
        if (
            a.profile["crs"] != b.profile["crs"]
            or a.meta.start_time.date() == b.meta.start_time.date()
        ):
            continue
        to_map = Transformer.from_crs(4326, a.profile["crs"].to_epsg(), always_xy=True)
        pa, pb = (Polygon([to_map.transform(*p) for p in s.meta.footprint_lonlat]) for s in (a, b))
        if pa.intersection(pb).area < 0.5 * pa.area:
            continue
        revisits += 1
        ta, tb = a.profile["transform"], b.profile["transform"]
        assert (ta.c, ta.f) != (tb.c, tb.f)  # origin shifted ...
        dx, dy = (tb.c - ta.c) / 30.0, (ta.f - tb.f) / 30.0
        assert max(abs(dx), abs(dy)) * 30 <= 1000  # ... by a few hundred metres
        # the same ground carries the same land-cover labels on both dates
        dc, dr = int(dx), int(dy)
        ra = slice(max(0, dr), SIZE + min(0, dr))
        ca = slice(max(0, dc), SIZE + min(0, dc))
        rb = slice(max(0, -dr), SIZE + min(0, -dr))
        cb = slice(max(0, -dc), SIZE + min(0, -dc))
        la, lb = a.classmap[ra, ca], b.classmap[rb, cb]
        both = (la > 0) & (lb > 0)
        assert both.sum() > 100
        assert np.array_equal(la[both], lb[both])
    assert revisits >= 1


def test_plan_counts_places_and_revisits():
    for scenes, frac, places in ((6, 0.5, 3), (6, 0.0, 6), (6, 1.0, 2), (1, 0.5, 1), (2, 1.0, 2)):
        acqs = plan_acquisitions(scenes, 32, seed=1, revisit_fraction=frac)
        assert len(acqs) == scenes
        assert len({a.place.index for a in acqs}) == places
        if places >= 2:
            assert len({a.place.zone for a in acqs}) >= 2
        names = [a.name for a in acqs]
        assert len(set(names)) == scenes
        for a in acqs:  # revisits come after the first visit
            first = min(b.start for b in acqs if b.place.index == a.place.index)
            assert a.shift == (0, 0) or a.start > first


def test_bad_arguments_are_rejected(tmp_path):
    with pytest.raises(ValueError):
        write_archive(tmp_path / "a", tmp_path / "l", scenes=0, size=32, seed=0)
    with pytest.raises(ValueError):
        write_archive(
            tmp_path / "a", tmp_path / "l", scenes=1, size=32, seed=0, revisit_fraction=1.5
        )
    with pytest.raises(ValueError):
        write_archive(tmp_path / "a", tmp_path / "l", scenes=1, size=8, seed=0)


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_same_seed_gives_identical_bytes_and_other_seed_differs(tmp_path):
    for run in ("a", "b"):
        write_archive(
            tmp_path / run / "archive", tmp_path / run / "labels", scenes=3, size=40, seed=11
        )
    write_archive(tmp_path / "c" / "archive", tmp_path / "c" / "labels", scenes=3, size=40, seed=12)
    a, b, c = (_tree(tmp_path / r) for r in "abc")
    assert len(a) == 3 * (2 + len(QL_LAYERS)) + 3 + 1  # products + class maps + classes.json
    assert a.keys() == b.keys()
    for k in a:
        assert a[k] == b[k], k
    images_a = [v for k, v in a.items() if k.endswith("SPECTRAL_IMAGE.TIF")]
    images_c = [v for k, v in c.items() if k.endswith("SPECTRAL_IMAGE.TIF")]
    assert a.keys() != c.keys()
    assert not set(images_a) & set(images_c)


# --------------------------------------------------------------------------- realism


def _interior(s: Scene, class_name: str, iterations: int = 2) -> np.ndarray:
    """Clear pixels of a class, away from class edges (the PSF mixes neighbours)."""
    inner = ndimage.binary_erosion(s.classmap == CLASS[class_name], iterations=iterations)
    return inner & s.clear


def test_vegetation_has_a_red_edge(scenes):
    for name in ("forest", "cropland", "grassland"):
        sel = lambda s, n=name: _interior(s, n, 1)  # noqa: E731
        nir, red = _pooled(scenes, sel, 800), _pooled(scenes, sel, 670)
        assert nir.size > 50, name
        assert np.median(nir) > 3 * np.median(red), name
        assert np.median(nir) > 0.2


def test_water_is_dark_in_nir_and_swir(scenes):
    per_band = []
    for s in scenes:
        sel = _interior(s, "water")
        if sel.sum():
            per_band.append(s.refl[:, sel])
    pix = np.concatenate(per_band, axis=1)
    assert pix.shape[1] > 30
    med = np.median(pix, axis=1)
    wl = scenes[0].wl
    assert np.all(med[wl >= 1000] < 0.05)
    assert 0.003 < med[nearest_band(wl, 550)] < 0.12  # a few percent in the green
    assert med[nearest_band(wl, 550)] > 3 * med[nearest_band(wl, 1050)]


def test_water_vapour_band_is_near_zero_and_noisy(scenes):
    land = lambda s: s.clear & (s.classmap > CLASS["water"])  # noqa: E731
    wv, ref = _pooled(scenes, land, 1390), _pooled(scenes, land, 1250)
    assert np.median(ref) > 0.1
    assert abs(np.median(wv)) < 0.1 * np.median(ref)
    # noisy: spread comparable to the signal left, values on both sides of zero
    assert np.std(wv) > abs(np.median(wv)) and (wv < 0).any()


def test_cloud_mask_agrees_with_bright_pixels(scenes):
    cloud = _pooled(scenes, lambda s: s.masks["QL_QUALITY_CLOUD"] & s.valid, 470)
    clear = _pooled(scenes, lambda s: s.clear, 470)
    assert cloud.size > 20
    assert np.median(cloud) > 0.25 and np.median(cloud) > 3 * np.median(clear)
    assert np.percentile(cloud, 10) > np.percentile(clear, 90)


def test_cloud_shadow_mask_is_darker(scenes):
    # compare each shadowed pixel with clear pixels of the same class in the same scene
    ratios = []
    for s in scenes:
        nir = s.band(860)
        others = (
            s.masks["QL_QUALITY_SNOW"] | s.masks["QL_QUALITY_HAZE"] | s.masks["QL_QUALITY_CIRRUS"]
        )
        shadow = s.masks["QL_QUALITY_CLOUDSHADOW"] & ~others
        for c in range(2, len(LANDCOVER_CLASSES) + 1):  # land classes
            clear = s.clear & (s.classmap == c)
            if clear.sum() >= 10 and (shadow & (s.classmap == c)).any():
                ratios.append(nir[shadow & (s.classmap == c)] / np.median(nir[clear]))
    ratios = np.concatenate(ratios)
    assert ratios.size > 20
    assert np.median(ratios) < 0.8


def test_snow_mask_is_bright_in_vis_and_dark_near_1600(scenes):
    snow = lambda s: s.masks["QL_QUALITY_SNOW"] & ~s.masks["QL_QUALITY_CLOUDSHADOW"]  # noqa: E731
    vis, swir = _pooled(scenes, snow, 550), _pooled(scenes, snow, 1600)
    assert vis.size > 20
    assert np.median(vis) > 0.5
    assert np.median(swir) < 0.4 * np.median(vis)
    # and clear land is not like that
    clear_vis = _pooled(scenes, lambda s: s.clear, 550)
    assert np.median(clear_vis) < 0.3


def test_pixelmask_marks_defective_pixels(scenes):
    for s in scenes:
        m = s.masks["QL_PIXELMASK"]
        assert 1 <= m.sum() <= 0.01 * s.valid.sum()
        dead = s.raw[:, m]
        assert np.all((dead == 0).sum(axis=0) >= 5)  # a run of dead bands per flagged pixel


def test_library_classes_are_separable_and_physical():
    lib = load_library(0)
    assert load_library(0) is lib  # cached
    wl = enmap_nominal().wavelengths
    assert set(lib) == {*LANDCOVER_CLASSES, "snow", "cloud"}
    for name, arr in lib.items():
        assert arr.ndim == 2 and arr.shape[1] == 224 and len(arr) >= 10, name
        assert arr.min() >= 0 and arr.max() <= 1, name
    b = lambda nm: nearest_band(wl, nm)  # noqa: E731
    assert np.all(lib["water"][:, wl >= 900] < 0.03)
    assert np.median(lib["snow"][:, b(550)]) > 0.8 and np.all(lib["snow"][:, b(1600)] < 0.3)
    assert np.all(lib["cloud"][:, b(550)] > 0.4)
    veg = np.concatenate([lib[c] for c in ("forest", "cropland", "grassland")])
    assert np.all(veg[:, b(800)] > 2 * veg[:, b(670)])
    # class means differ: nearest-mean classification of the class means is the identity
    means = np.stack([lib[c].mean(0) for c in LANDCOVER_CLASSES])
    d = np.linalg.norm(means[:, None] - means[None], axis=2)
    np.fill_diagonal(d, np.inf)
    assert d.min() > 0.05


def test_mean_spectrum_resembles_real_enmap_potsdam(scenes):
    tiles = sorted((SHARED / "enmap_potsdam" / "images").glob("*.tif"))
    if not tiles:
        pytest.skip("../shared/data/enmap_potsdam is absent")
    real = []
    for t in tiles:
        with rasterio.open(t) as src:
            x = src.read().astype(float)
            wl = np.array([float(src.tags(i + 1)["wavelength"]) for i in range(src.count)])
        x = x[select_view(wl)].reshape(202, -1)
        real.append(x[:, np.all(x != NODATA, axis=0)] * 1e-4)
    real_mean = np.concatenate(real, axis=1).mean(axis=1)
    syn = np.concatenate([s.refl[select_view(s.wl)][:, s.clear] for s in scenes], axis=1)
    syn_mean = syn.mean(axis=1)
    assert np.corrcoef(real_mean, syn_mean)[0, 1] > 0.95
    ratio = syn_mean / real_mean
    assert 0.5 < np.median(ratio) < 2.0


def test_writes_only_under_the_two_folders_it_is_given(tmp_path):
    """`synth-archive --out DIR` wrote its class maps to DIR/../labels (issue 13)."""
    out, labels = tmp_path / "a" / "archive", tmp_path / "elsewhere" / "labs"
    (paths,) = [write_archive(out, labels, scenes=1, size=32, seed=3)]
    written = {p.relative_to(tmp_path).parts[:2] for p in tmp_path.rglob("*") if p.is_file()}
    assert written == {("a", "archive"), ("elsewhere", "labs")}
    assert sorted(p.name for p in tmp_path.joinpath("a").iterdir()) == ["archive"]
    assert classmap_path(labels, paths[0]).is_file()
    assert classmap_path(labels, paths[0].name) == classmap_path(labels, paths[0])
    assert (labels / "classes.json").is_file()
