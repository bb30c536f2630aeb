"""Downstream dataset builders: raster and vector label sources onto curated patch grids,
other sensors by SRF resampling, split schemes and the random-vs-blocked gap."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
from rasterio.transform import from_origin
from rasterio.warp import transform as warp_transform
from shapely.geometry import box

from spectralearth.bands import sensor_bands, view_wavelengths
from spectralearth.downstream.build import (
    RasterLabelSource,
    VectorLabelSource,
    build_dataset,
    read_patch_grids,
    sensor_matrix,
)
from spectralearth.downstream.datasets.base import ReleasedDataset, get_card
from spectralearth.downstream.splits import SCHEMES, assign_splits, split_gap
from tests.helpers import REPO

CRS = "EPSG:32633"
P = 16  # patch px
PX = 30.0
X0, Y0 = 399_960.0, 5_700_000.0  # upper-left of the patch lattice
COLS, ROWS = 4, 3
BLOCK = 90.0  # label blocks of 3 x 3 px, aligned with the pixel grid
NLCD = get_card("enmap_nlcd")
EUROCROPS = get_card("enmap_eurocrops")


def truth(x: np.ndarray, y: np.ndarray, codes) -> np.ndarray:
    """Source code at map points (UTM 33N): one code per 90 m block, 0 for some blocks."""
    bx = np.floor((x - X0) / BLOCK).astype(np.int64)
    by = np.floor((Y0 - y) / BLOCK).astype(np.int64)
    table = np.array([*codes, 0, 999], dtype=np.int64)
    return table[(bx * 7 + by * 3) % len(table)]


def patch_transform(k: int):
    r, c = divmod(k, COLS)
    return from_origin(X0 + c * P * PX, Y0 - r * P * PX, PX, PX)


@pytest.fixture(scope="module")
def patches(tmp_path_factory) -> Path:
    """12 locations on a 4 x 3 lattice (202-band patches); two have a second date."""
    root = tmp_path_factory.mktemp("patches")
    rng = np.random.default_rng(0)
    wl = view_wavelengths()
    rows = []
    for k in range(COLS * ROWS):
        for scene in (1, 2) if k in (0, 5) else (1,):
            rel = f"enmap/{k + 1:07d}/{scene:05d}.tif"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            data = rng.integers(500, 4000, (len(wl), P, P)).astype(np.int16)
            with rasterio.open(
                root / rel, "w", driver="GTiff", width=P, height=P, count=len(wl),
                dtype="int16", crs=CRS, transform=patch_transform(k), nodata=-32768,
            ) as dst:  # fmt: skip
                dst.write(data)
                dst.update_tags(wavelengths=",".join(f"{x:.3f}" for x in wl))
            rows.append({"location_id": k + 1, "scene_id": scene, "path": rel})
    pd.DataFrame(rows).to_parquet(root / "index.parquet")
    return root


def write_raster(path: Path, crs: str, transform, shape, codes, dtype="uint16", nodata=None):
    """A label raster whose pixel values are ``truth`` at the pixel centres (in UTM)."""
    h, w = shape
    rr, cc = np.mgrid[0:h, 0:w] + 0.5
    xs = transform.a * cc + transform.c
    ys = transform.e * rr + transform.f
    ux, uy = warp_transform(crs, CRS, xs.ravel().tolist(), ys.ravel().tolist())
    values = truth(np.asarray(ux), np.asarray(uy), codes).reshape(h, w)
    with rasterio.open(
        path, "w", driver="GTiff", width=w, height=h, count=1, dtype=dtype, crs=crs,
        transform=transform, nodata=nodata,
    ) as dst:  # fmt: skip
        dst.write(values.astype(dtype), 1)
    return path


def expected_labels(root: Path, info, name: str) -> np.ndarray:
    with rasterio.open(root / info.label_dir / name) as src:
        xs, ys = np.meshgrid(
            src.transform.c + PX * (np.arange(src.width) + 0.5),
            src.transform.f - PX * (np.arange(src.height) + 0.5),
        )
        return truth(xs, ys, info.codes), src.read(1)


def lattice_bounds_in(crs: str, pad: float = 200.0):
    from rasterio.warp import transform_bounds

    return transform_bounds(
        CRS, crs, X0 - pad, Y0 - ROWS * P * PX - pad, X0 + COLS * P * PX + pad, Y0 + pad
    )


def check_aligned(out: Path, info) -> None:
    """Every built label patch equals ``truth`` at its pixel centres (kept codes)."""
    root = out / info.name
    names = [
        n
        for s in ("train", "val", "test")
        for n in (root / "splits" / f"{s}.txt").read_text().split()
    ]
    assert names
    for name in names:
        want, got = expected_labels(root, info, name)
        assert np.array_equal(
            np.where(np.isin(want, info.codes), want, 0), np.where(np.isin(got, info.codes), got, 0)
        ), name


def test_raster_in_another_crs_is_reprojected_not_misaligned(patches, tmp_path):
    # EPSG:3035 (CORINE's LAEA Europe), 10 m pixels, origin nowhere near the UTM grid
    left, bottom, right, top = lattice_bounds_in("EPSG:3035")
    tf = from_origin(np.floor(left) + 3.7, np.ceil(top) + 1.3, 10.0, 10.0)
    shape = (int((top - bottom) / 10) + 3, int((right - left) / 10) + 3)
    src = write_raster(tmp_path / "nlcd_3035.tif", "EPSG:3035", tf, shape, NLCD.codes, "uint8", 255)
    report = build_dataset("enmap_nlcd", patches, RasterLabelSource(src), tmp_path / "out")
    assert report["kept"] == len(read_patch_grids(patches)) == 14 and report["not_covered"] == 0
    check_aligned(tmp_path / "out", NLCD)
    ds = ReleasedDataset(tmp_path / "out" / "enmap_nlcd", "enmap_nlcd", "train")
    image, target = ds[0]
    assert image.shape == (202, P, P) and target.shape == (P, P)
    assert set(np.unique(target.numpy())) <= set(range(-1, NLCD.num_classes))


def test_shifted_raster_same_crs_is_resampled_onto_the_patch_grid(patches, tmp_path):
    # same CRS and 30 m pixels, but the grid is offset by 2 px + 10 m / -1 px - 12 m
    tf = from_origin(X0 - 2 * PX - 10.0, Y0 + PX + 12.0, PX, PX)
    src = write_raster(
        tmp_path / "shifted.tif", CRS, tf, (ROWS * P + 5, COLS * P + 5), NLCD.codes, "uint8"
    )
    report = build_dataset("enmap_nlcd", patches, RasterLabelSource(src), tmp_path / "out")
    assert report["kept"] == 14
    check_aligned(tmp_path / "out", NLCD)
    # reading the raster as if it shared the patch grid would be off by the shift
    with rasterio.open(src) as s:
        naive = s.read(1)[:P, :P]
    want, got = expected_labels(tmp_path / "out" / "enmap_nlcd", NLCD, "0000001/00001.tif")
    assert not np.array_equal(naive, got) and np.array_equal(
        got[np.isin(got, NLCD.codes)], want[np.isin(got, NLCD.codes)]
    )


def test_uncovered_patches_are_left_out_with_a_count(patches, tmp_path):
    # the raster covers the two left lattice columns and 8 px of the third
    width = 2 * P + 8
    src = write_raster(
        tmp_path / "half.tif",
        CRS,
        from_origin(X0, Y0, PX, PX),
        (ROWS * P, width),
        NLCD.codes,
        "uint8",
    )
    report = build_dataset("enmap_nlcd", patches, RasterLabelSource(src), tmp_path / "out")
    # columns 0-1: 6 locations + 2 second dates kept; columns 2-3 (6 locations) left out
    assert (report["kept"], report["not_covered"]) == (8, 6)
    assert "0000003/00001.tif" in report["not_covered_patches"]
    loose = build_dataset(
        "enmap_nlcd", patches, RasterLabelSource(src), tmp_path / "o2", min_coverage=0.5
    )
    assert (loose["kept"], loose["not_covered"]) == (11, 3)
    built = json.loads((tmp_path / "out" / "enmap_nlcd" / "build.json").read_text())
    assert built["not_covered"] == 6


def test_tiles_mosaic_and_remap(patches, tmp_path):
    # two tiles (west / east halves) with raw values 1..K remapped to the NLCD codes
    raw_of = {c: i + 1 for i, c in enumerate(NLCD.codes)}
    tiles = []
    for j, x in enumerate((X0, X0 + 2 * P * PX)):
        p = write_raster(
            tmp_path / f"t{j}.tif",
            CRS,
            from_origin(x, Y0, PX, PX),
            (ROWS * P, 2 * P),
            NLCD.codes,
            "uint8",
        )
        with rasterio.open(p, "r+") as ds:
            a = ds.read(1)
            ds.write(np.vectorize(lambda v: raw_of.get(int(v), 200))(a).astype("uint8"), 1)
        tiles.append(p)
    source = RasterLabelSource(tiles, remap={v: k for k, v in raw_of.items()})
    report = build_dataset("enmap_nlcd", patches, source, tmp_path / "out")
    assert report["kept"] == 14
    check_aligned(tmp_path / "out", NLCD)


def polygons_4326(codes, keep_every: int = 1) -> gpd.GeoDataFrame:
    """One polygon per 90 m block of the lattice (UTM), reprojected to EPSG:4326."""
    geoms, values = [], []
    nx, ny = int(np.ceil(COLS * P * PX / BLOCK)), int(np.ceil(ROWS * P * PX / BLOCK))
    for i in range(nx):
        for j in range(ny):
            if (i + j) % keep_every:
                continue
            x, y = X0 + i * BLOCK, Y0 - j * BLOCK
            code = int(truth(np.array([x + 45.0]), np.array([y - 45.0]), codes)[0])
            if code:
                geoms.append(box(x, y - BLOCK, x + BLOCK, y))
                values.append(str(code))
    return gpd.GeoDataFrame({"EC_hcat_c": values}, geometry=geoms, crs=CRS).to_crs("EPSG:4326")


def test_vector_polygons_in_4326_are_rasterised_onto_utm_patches(patches, tmp_path):
    frame = polygons_4326(EUROCROPS.codes)
    assert frame.crs.to_epsg() == 4326
    path = tmp_path / "eurocrops.parquet"
    frame.to_parquet(path)
    report = build_dataset(
        "enmap_eurocrops", patches, VectorLabelSource(path, "EC_hcat_c"), tmp_path / "out"
    )
    assert report["kept"] == 14
    check_aligned(tmp_path / "out", EUROCROPS)
    with rasterio.open(
        tmp_path / "out" / "enmap_eurocrops" / "eurocrops" / "0000001/00001.tif"
    ) as src:
        assert src.dtypes[0] == "uint32" and src.crs.to_string() == CRS  # HCAT codes > int32
    ds = ReleasedDataset(tmp_path / "out" / "enmap_eurocrops", "enmap_eurocrops", "train")
    assert (ds[0][1] >= 0).any()


def test_vector_gaps_and_extent(patches, tmp_path):
    info = get_card("enmap_bdforet")
    # polygons on every other block only (forest stands); unlabelled pixels are 0 / ignored
    frame = polygons_4326(info.codes, keep_every=2).rename(columns={"EC_hcat_c": "code"})
    # surveyed area: the two left lattice columns only
    extent = (
        gpd.GeoSeries([box(X0, Y0 - ROWS * P * PX, X0 + 2 * P * PX, Y0)], crs=CRS)
        .to_crs(4326)
        .iloc[0]
    )
    source = VectorLabelSource(frame[frame.intersects(extent)], "code", extent=extent)
    report = build_dataset("enmap_bdforet", patches, source, tmp_path / "out")
    assert (report["kept"], report["not_covered"]) == (8, 6)
    name = "0000001/00001.tif"
    with rasterio.open(tmp_path / "out" / "enmap_bdforet" / "bdforet" / name) as src:
        got = src.read(1)
    assert (got == 0).mean() > 0.3 and np.isin(got[got > 0], info.codes + (999,)).all()


def test_other_sensors_are_resampled_from_enmap(patches, tmp_path):
    cdl = get_card("desis_cdl")
    src = write_raster(
        tmp_path / "cdl.tif",
        CRS,
        from_origin(X0, Y0, PX, PX),
        (ROWS * P, COLS * P),
        cdl.codes,
        "uint8",
    )
    for name, bands in (("desis_cdl", 235), ("eo1_cdl", 198)):
        report = build_dataset(name, patches, RasterLabelSource(src), tmp_path / "out")
        assert report["resampled"] == report["kept"] == 14
        ds = ReleasedDataset(tmp_path / "out" / name, name, "train")
        assert ds[0][0].shape == (bands, P, P)
        with rasterio.open(tmp_path / "out" / name / get_card(name).sensor_dir / ds.files[0]) as f:
            assert len(f.tags()["wavelengths"].split(",")) == bands
    # a flat spectrum stays flat (outside the water-vapour gaps, which are darkened)
    wl = view_wavelengths()
    for sensor in ("DESIS", "Hyperion"):
        m = sensor_matrix(wl, sensor)
        t = sensor_bands(sensor)
        flat = m @ np.full(len(wl), 0.3)
        from spectralearth.bands import in_water_vapour

        far = ~in_water_vapour(t.wavelengths - 25) & ~in_water_vapour(t.wavelengths + 25)
        assert np.allclose(flat[far], 0.3, atol=1e-6)
        # a red edge lands at the right wavelength
        edge = m @ (wl > 720).astype(float)
        vis = t.wavelengths < 1000
        assert abs(t.wavelengths[vis][np.argmin(np.abs(edge[vis] - 0.5))] - 720) < 12


def test_band_tables_have_the_documented_counts():
    desis, hyp = sensor_bands("DESIS"), sensor_bands("Hyperion")
    assert (
        len(desis) == 235
        and 400 <= desis.wavelengths.min() < 403
        and 996 < desis.wavelengths.max() <= 1000
    )
    assert np.allclose(np.diff(desis.wavelengths), 2.55)
    assert (
        len(hyp) == 198 and hyp.detectors.count("VNIR") == 50 and hyp.detectors.count("SWIR") == 148
    )
    assert abs(hyp.wavelengths[0] - 426.82) < 0.01 and abs(hyp.wavelengths[-1] - 2395.5) < 0.01
    text = (REPO / "src/spectralearth/resources/hyperion_bands.csv").read_text()
    assert "APPROXIMATION" in text and "make_sensor_bands" in text


# --- split schemes ------------------------------------------------------------------------


def lattice_frame(n: int = 12, scenes_per_row: bool = True) -> pd.DataFrame:
    rows = []
    for r in range(n):
        for c in range(n):
            rows.append(
                {
                    "name": f"{r * n + c:07d}/{r // 2:05d}.tif",
                    "location_id": r * n + c,
                    "scene_id": r // 2 if scenes_per_row else 0,
                    "crs": CRS,
                    "x": X0 + c * 480.0,
                    "y": Y0 - r * 480.0,
                    "size_m": 480.0,
                }
            )
    return pd.DataFrame(rows)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_split_schemes_are_seeded_location_disjoint_and_blocked(scheme):
    frame = lattice_frame()
    frame = pd.concat([frame, frame.iloc[:5].assign(scene_id=99)], ignore_index=True)  # revisits
    a = assign_splits(frame, scheme, 0.1, 0.15, seed=3)
    assert a.equals(
        assign_splits(frame.sample(frac=1, random_state=1).sort_index(), scheme, 0.1, 0.15, seed=3)
    )
    assert set(a) == {"train", "val", "test"}
    assert (frame.assign(split=a).groupby("location_id")["split"].nunique() == 1).all()
    share = a.value_counts(normalize=True)
    assert 0.05 < share["test"] < 0.35 and share["train"] > 0.5
    if scheme == "block":  # 4 x 4 patch blocks travel together
        key = frame["x"] // (4 * 480.0) * 10_000 + frame["y"] // (4 * 480.0)
        assert (frame.assign(split=a, key=key).groupby("key")["split"].nunique() == 1).all()
    if scheme == "scene":  # rows of scenes (and the revisit scene joined to scene 0) together
        assert (frame.assign(split=a).groupby("scene_id")["split"].nunique() == 1).all()


def test_build_writes_every_scheme(patches, tmp_path):
    src = write_raster(
        tmp_path / "n.tif",
        CRS,
        from_origin(X0, Y0, PX, PX),
        (ROWS * P, COLS * P),
        NLCD.codes,
        "uint8",
    )
    report = build_dataset(
        "enmap_nlcd",
        patches,
        RasterLabelSource(src),
        tmp_path / "out",
        scheme="block",
        block_m=960.0,
    )
    root = tmp_path / "out" / "enmap_nlcd"
    for s in SCHEMES:
        assert sum(report["splits_by_scheme"][s].values()) == 14
        assert (root / "splits" / s / "train.txt").is_file()
    assert (root / "splits" / "test.txt").read_text() == (
        root / "splits" / "block" / "test.txt"
    ).read_text()


def write_leaky_dataset(root: Path, n: int = 8, size: int = 4) -> Path:
    """enmap_nlcd-shaped data where each 2 x 2 block of locations has its own spectral
    offset per class: a random split sees every block in train, a blocked split does not."""
    rng = np.random.default_rng(0)
    XL = 400_080.0  # a multiple of the block side, so 2 x 2 locations share one block
    # every block has its own class spectra: nothing carries over to an unseen block
    spectra = rng.uniform(1000, 3000, (n // 2, n // 2, 3, 202))
    codes = np.array(NLCD.codes[:3])
    for r in range(n):
        for c in range(n):
            name = f"{r * n + c + 1:07d}/00001.tif"
            cls = rng.integers(0, 3, (size, size))
            img = spectra[r // 2, c // 2][cls].transpose(2, 0, 1)
            img += rng.normal(0, 50, img.shape)
            tf = from_origin(XL + c * size * PX, Y0 - r * size * PX, PX, PX)
            for folder, data, dtype in (
                ("enmap", img.astype(np.int16), "int16"),
                ("nlcd", codes[cls][None], "uint8"),
            ):
                p = root / folder / name
                p.parent.mkdir(parents=True, exist_ok=True)
                with rasterio.open(
                    p,
                    "w",
                    driver="GTiff",
                    width=size,
                    height=size,
                    count=len(data),
                    dtype=dtype,
                    crs=CRS,
                    transform=tf,
                ) as dst:
                    dst.write(data)
    frame = pd.DataFrame(
        [
            {"name": f"{r * n + c + 1:07d}/00001.tif", "location_id": r * n + c + 1, "scene_id": 1, "crs": CRS,
             "x": XL + c * size * PX, "y": Y0 - r * size * PX, "size_m": size * PX}
            for r in range(n) for c in range(n)
        ]
    )  # fmt: skip
    from spectralearth.downstream.splits import write_split_files

    for s in ("random", "block"):
        write_split_files(
            root, frame["name"], assign_splits(frame, s, 0.1, 0.25, 0, block_m=2 * size * PX), sub=s
        )
    return root


def test_split_gap_reports_how_much_the_random_split_flatters(tmp_path):
    root = write_leaky_dataset(tmp_path / "enmap_nlcd")
    from spectralearth.downstream.baselines import random_forest_baseline

    def small_rf(train, test, k, task, seed):
        return random_forest_baseline(
            train, test, k, seed=seed, task=task, n_estimators=10, n_jobs=1
        )

    gap = split_gap(root, evaluator=small_rf, metrics=["overall_accuracy", "macro_iou"])
    assert list(gap["metric"]) == ["overall_accuracy", "macro_iou"]
    assert np.allclose(gap["gap"], gap["random"] - gap["blocked"])
    acc = gap.set_index("metric").loc["overall_accuracy"]
    assert acc["random"] > 0.9 and acc["gap"] > 0.1, acc.to_dict()
