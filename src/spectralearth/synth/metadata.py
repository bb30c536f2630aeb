"""METADATA.XML of a synthetic L2A product, in the tag structure of DLR's official files.

Tag names and nesting follow a real L2A METADATA.XML (schema ``metadata_Lx_00-02-00.xsd``).
Orbit, attitude, frame times, RPCs and instrument telemetry are left out. Built with
xml.etree (writing only; parsing untrusted XML goes through defusedxml in the reader).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

CORNERS = ("upper_left", "lower_left", "lower_right", "upper_right")


@dataclass
class ProductInfo:
    """Everything the XML states about one product."""

    name: str
    datatake: int
    tile: int
    version: str  # "01.04.00"
    start: datetime
    stop: datetime
    processed: datetime
    utm_zone: int
    columns: int  # image (ortho scene) width / height in pixels
    rows: int
    swath_width: int  # sensor strip across / along track in pixels (widthOfScene, heightOfScene)
    swath_length: int
    corners_lonlat: dict[str, tuple[float, float]]  # CORNERS + "center" -> (lon, lat)
    scene_azimuth: float
    sun: dict[str, tuple[float, float]]  # CORNERS + "center" -> (azimuth, elevation)
    cover: dict[str, int]  # cloudCover, hazeCover, cirrusCover, snowCover, cloudShadow, waterCover
    wavelengths: np.ndarray
    fwhms: np.ndarray
    detectors: tuple[str, ...]
    band_mean: np.ndarray  # reflectance
    band_std: np.ndarray
    files: dict[str, int] = field(default_factory=dict)  # file name -> bytes
    season: str = "summer"
    biome: str = "Temperate Broadleaf and Mixed Forests"


def _t(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _sub(parent: ET.Element, tag: str, text: object | None = None, **attrib: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrib)
    if text is not None:
        el.text = str(text)
    return el


def _polygon(parent: ET.Element, info: ProductInfo) -> None:
    poly = _sub(parent, "boundingPolygon")
    mid = info.start + (info.stop - info.start) / 2
    times = {
        "upper_left": info.start,
        "upper_right": info.start,
        "lower_left": info.stop,
        "lower_right": info.stop,
        "center": mid,
    }
    # four corners, the closing point (upper_left again), then the centre
    for frame in (*CORNERS, "upper_left", "center"):
        lon, lat = info.corners_lonlat[frame]
        p = _sub(poly, "point")
        _sub(p, "frame", frame)
        _sub(p, "latitude", f"{lat:.7f}", unit="DEG")
        _sub(p, "longitude", f"{lon:.7f}", unit="DEG")
        _sub(p, "utcTime", _t(times[frame]))


def _channels(numbers: list[int]) -> str:
    return ",".join(str(n) for n in numbers)


def _angles(parent: ET.Element, tag: str, values: dict[str, float]) -> None:
    el = _sub(parent, tag)
    for frame in ("upper_left", "upper_right", "lower_right", "lower_left", "center"):
        _sub(el, frame, f"{values[frame]:.6f}", unit="DEG")


# Constant fields, in the order of a real L2A METADATA.XML.
PROCESSING = (
    ("terrainCorrection", "Yes"),
    ("ozoneValue", "300"),
    ("season", None),  # the product's season
    ("productFormat", "GeoTIFF+Metadata"),
    ("mapProjection", "UTM_Zone_of_Scene_Center"),
    ("imageResampling", "Bilinear_Interpolation"),
    ("DEMDBVersion", "SRTM_C1ARC"),
    ("correctionType", "Combined"),
    ("cirrusHazeRemoval", "No"),
    ("bandInterpolation", "No"),
    ("waterType", "Clear"),
)
DETECTOR_FLAGS = {
    "VNIR": (
        "processorLogVNIR",
        "overallQualityVNIR",
        "deadPixelsVNIR",
        "defectivePixelsVNIR",
        "generalArtifactsVNIR",
        "saturationCrosstalkVNIR",
        "stripingBandingVNIR",
        "qualityRadiometryVNIR",
    ),
    "SWIR": (
        "processorLogSWIR",
        "deadPixelsSWIR",
        "defectivePixelsSWIR",
        "generalArtifactsSWIR",
        "saturationCrosstalkSWIR",
        "stripingBandingSWIR",
        "overallQualitySWIR",
        "qualityRadiometrySWIR",
    ),
}
SCENE_QUALITY = (
    ("overallQuality", "0"),
    ("numTilesUsed", "1"),
    ("levelOfRejection", "2"),
    ("numPointsGCP", "0"),
    ("numPointsICP", "0"),
    ("numPointsAll", "0"),
    ("numPointsDiscardedGCP", "0"),
    ("orthoResidual", "0"),
    ("orthoResidual_x", "0"),
    ("orthoResidual_y", "0"),
    ("orthoMean", "0"),
    ("orthoMean_x", "0"),
    ("orthoMean_y", "0"),
    ("orthoRMSE", "0"),
    ("orthoRMSE_x", "0"),
    ("orthoRMSE_y", "0"),
    ("sceneSZA", None),  # from the sun elevation at the scene centre
    ("qualityAtmosphere", "0"),
    ("orthoTerrain", "0"),
    ("sceneSunglint", "-999"),
)
COVER_TAGS = ("cloudCover", "hazeCover", "cirrusCover", "snowCover", "waterCover", "cloudShadow")
ATMOSPHERE = (
    ("noncloudShadow", "0"),
    ("sceneWV", "1800"),
    ("sceneAOT", "150"),
    ("sceneAtmParam", "0"),
    ("sceneTerrain", "0"),
)
QUICKLOOK_RGB_NM = (("SWIR", (2201.0, 1645.3, 1051.3)), ("VNIR", (847.1, 671.21, 548.06)))


def _band_numbers(info: ProductInfo) -> list[int]:
    return list(range(1, len(info.wavelengths) + 1))


def _metadata(root: ET.Element, info: ProductInfo) -> None:
    md = _sub(root, "metadata")
    schema = _sub(md, "schema")
    _sub(schema, "copyright", "(c) DLR EnMAP 2019")
    _sub(schema, "versionSchema", "00.02.00")
    _sub(schema, "name", "metadata_Lx_00-02-00.xsd")
    _sub(schema, "processingLevel", "L2A")
    _sub(md, "name", f"{info.name}-METADATA.XML")
    _sub(
        md,
        "comment",
        f"SYNTHETIC EnMAP Level 2A Product of datatake {info.datatake}, tile "
        f"{info.tile}: simulated by spectralearth.synth from earthlib spectra, not a DLR product",
    )
    _sub(md, "copyright", "synthetic data, no copyright claimed")
    _sub(md, "citation", "Ryan et al., earthlib: a global spectral library (spectra used)")


def _processing(root: ET.Element, info: ProductInfo) -> None:
    proc = _sub(root, "processing")
    for tag, text in PROCESSING:
        _sub(proc, tag, info.season if text is None else text)


def _base(root: ET.Element, info: ProductInfo) -> None:
    base = _sub(root, "base")
    _polygon(_sub(base, "spatialCoverage"), info)
    tc = _sub(base, "temporalCoverage")
    _sub(tc, "startTime", _t(info.start))
    _sub(tc, "stopTime", _t(info.stop))
    _sub(base, "revision", info.version)
    _sub(base, "altitudeCoverage", "653000.00")
    _sub(base, "sphere", "earth")
    _sub(base, "format", "ENMAP_L2A")
    _sub(base, "level", "L2A")
    _sub(base, "size", str(sum(info.files.values())))
    _sub(base, "archivedVersion", info.version)


def _quality_flags(spec: ET.Element, info: ProductInfo) -> None:
    q = _sub(spec, "qualityFlag")
    for tag in ("spare_1", "spare_2", "spare_3"):
        _sub(q, tag, "-999")
    for det in ("VNIR", "SWIR"):
        _sub(q, f"sensorLog{det}", "-999")
        for tag in DETECTOR_FLAGS[det]:
            _sub(q, tag, "0")
        _sub(q, f"smileIndication{det}", "-999")
    sza = f"{90.0 - info.sun['center'][1]:.6f}"
    for tag, text in SCENE_QUALITY:
        _sub(q, tag, sza if text is None else text)
    for tag in COVER_TAGS:
        _sub(q, tag, str(int(info.cover[tag])))
    for tag, text in ATMOSPHERE:
        _sub(q, tag, text)


def _product_quality(spec: ET.Element, info: ProductInfo) -> None:
    numbers = _band_numbers(info)
    for det, tag in (("VNIR", "vnirProductQuality"), ("SWIR", "swirProductQuality")):
        chans = [n for n, d in zip(numbers, info.detectors, strict=True) if d == det]
        pq = _sub(spec, tag)
        _sub(pq, f"{det.lower()}ProductStatus", "OK")
        for when in ("Before", "After"):
            dq = _sub(pq, f"{det.lower()}Dark{when}Quality")
            _sub(dq, "available", "yes")
            _sub(dq, "screeningResult", "OK")
        _sub(pq, "numChannelsExpected", str(len(chans)))
        _sub(pq, "expectedChannelsList", _channels(chans))
        _sub(pq, "numChannelsMissing", "0")
        _sub(pq, "missingChannelsList")


def _acquisition(spec: ET.Element, info: ProductInfo) -> None:
    n_bands = len(info.wavelengths)
    n_vnir = sum(d == "VNIR" for d in info.detectors)
    for tag, text in (
        ("missionPhase", "synthetic"),
        ("processingCenter", "OP"),
        ("processingDateTime", _t(info.processed)),
        ("mission", "EnMAP"),
        ("satelliteID", "01"),
        ("sensor", "HSI"),
        ("datatakeID", f"{info.datatake:010d}"),
        ("acquisitionType", "EARTH"),
        ("productType", "STANDARD_ALL"),
        ("numberOfSWIRBands", str(n_bands - n_vnir)),
        ("numberOfVNIRBands", str(n_vnir)),
        ("datatakeStart", _t(info.start)),
        ("datatakeStop", _t(info.stop)),
        ("backgroundValue", "-32768"),
        ("tileID", f"{info.tile:02d}"),
        ("numberOfTiles", f"{max(info.tile, 3):02d}"),
    ):
        _sub(spec, tag, text)
    _sub(spec, "widthOfScene", str(info.swath_width), unit="pixel")
    _sub(spec, "heightOfScene", str(info.swath_length), unit="pixel")
    _sub(spec, "status", "NOMINAL")
    _angles(spec, "sunElevationAngle", {k: v[1] for k, v in info.sun.items()})
    _angles(spec, "sunAzimuthAngle", {k: v[0] for k, v in info.sun.items()})
    _angles(spec, "sceneAzimuthAngle", dict.fromkeys(info.sun, info.scene_azimuth))
    _sub(spec, "orbitDirection", "DESCENDING")
    _sub(spec, "pixelSize", "30")
    _sub(spec, "biomeType", info.biome)
    _sub(spec, "code", "L2A")


def _band_characterisation(spec: ET.Element, info: ProductInfo) -> None:
    bc = _sub(spec, "bandCharacterisation")
    for n, wl, fw in zip(_band_numbers(info), info.wavelengths, info.fwhms, strict=True):
        b = _sub(bc, "bandID", number=str(n))
        _sub(b, "wavelengthCenterOfBand", f"{wl:.3f}")
        _sub(b, "FWHMOfBand", f"{fw:.5f}")
        _sub(b, "GainOfBand", "0.0001")
        _sub(b, "OffsetOfBand", "0")


def _specific(root: ET.Element, info: ProductInfo) -> None:
    spec = _sub(root, "specific")
    _quality_flags(spec, info)
    _product_quality(spec, info)
    _acquisition(spec, info)
    _band_characterisation(spec, info)
    _sub(spec, "pixelSizeOfOrthoScene", "30")
    _sub(spec, "widthOfOrthoScene", str(info.columns))
    _sub(spec, "heightOfOrthoScene", str(info.rows))


def _image(prod: ET.Element, info: ProductInfo) -> None:
    merge = _sub(_sub(prod, "image"), "merge")
    image_name = f"{info.name}-SPECTRAL_IMAGE.TIF"
    _sub(merge, "channels", str(len(info.wavelengths)))
    _sub(merge, "name", image_name)
    _sub(merge, "size", str(-(-info.files.get(image_name, 0) // 1024)), unit="Kbyte")
    _sub(merge, "version", info.version)
    _sub(merge, "format", "binary")
    dim = _sub(merge, "dimension")
    _sub(dim, "columns", str(info.columns))
    _sub(dim, "rows", str(info.rows))
    lons = [info.corners_lonlat[c][0] for c in CORNERS]
    lats = [info.corners_lonlat[c][1] for c in CORNERS]
    geo = _sub(merge, "dimensionGeographic")
    _sub(geo, "longitude", f"{max(lons) - min(lons):.7f}", unit="DEG")
    _sub(geo, "latitude", f"{max(lats) - min(lats):.7f}", unit="DEG")
    for det, rgb in QUICKLOOK_RGB_NM:
        ql = _sub(merge, f"qlChannels{det}")
        for colour, wl in zip(("red", "green", "blue"), rgb, strict=True):
            _sub(ql, colour, str(wl))


def _product(root: ET.Element, info: ProductInfo) -> None:
    prod = _sub(root, "product")
    _image(prod, info)
    ortho = _sub(prod, "ortho")
    _sub(ortho, "projection", f"UTM_Zone{info.utm_zone}_North")
    _sub(ortho, "resolution", "30")
    _sub(ortho, "resampling", "bilinear")
    pfi = _sub(prod, "productFileInformation")
    for i, (fname, nbytes) in enumerate(sorted(info.files.items()), start=1):
        f = _sub(pfi, "file", number=str(i))
        _sub(f, "name", fname)
        _sub(f, "size", str(-(-nbytes // 1024)), unit="Kbyte")
        _sub(f, "version", info.version)
        _sub(f, "format", "xml" if fname.endswith(".XML") else "binary")
    stats = _sub(prod, "bandStatistics")
    rows = zip(_band_numbers(info), info.wavelengths, info.band_mean, info.band_std, strict=True)
    for n, wl, m, s in rows:
        b = _sub(stats, "bandID", number=str(n))
        _sub(b, "waveLength", f"{wl:.3f}")
        _sub(b, "mean", f"{m:.7f}")
        _sub(b, "stdDeviation", f"{s:.7f}")


def build_metadata(info: ProductInfo) -> bytes:
    """The METADATA.XML document as UTF-8 bytes (pretty-printed, deterministic)."""
    root = ET.Element(
        "level_X",
        {
            "xmlns:xsi": "http://www.w3.org/2001/XMLSchema-instance",
            "xsi:noNamespaceSchemaLocation": "metadata_Lx_00-02-00.xsd",
        },
    )
    for section in (_metadata, _processing, _base, _specific, _product):
        section(root, info)
    ET.indent(root, space="  ")
    return ET.tostring(root, encoding="UTF-8", xml_declaration=True) + b"\n"


def metadata_with_sizes(info: ProductInfo, xml_name: str) -> bytes:
    """Render the XML so that its own entry in productFileInformation is its real size.

    The size of the XML depends on the digits of the sizes it lists, so iterate to the
    fixed point (two or three rounds).
    """
    info.files[xml_name] = 0
    for _ in range(6):
        doc = build_metadata(info)
        if info.files[xml_name] == len(doc):
            return doc
        info.files[xml_name] = len(doc)
    return doc
