import numpy as np
import pytest

from spectralearth.enmap.l2a import open_product, parse_metadata, parse_product_name
from spectralearth.enmap.scene import ProductError
from tests.helpers import shared

OFFICIAL = "ENMAP01-____L2A-DT0000326721_20170626T102020Z_001_V000204_20200406T201930Z-METADATA.XML"


def test_official_metadata_xml_parses():
    meta = parse_metadata(shared("enmap_l2a_metadata", OFFICIAL), product="official")
    assert len(meta.wavelengths) == 218
    assert meta.wavelengths[0] == pytest.approx(423.03)
    assert np.all(meta.gains == pytest.approx(0.0001))
    assert len(meta.vnir_channels) == 88 and len(meta.swir_channels) == 130
    assert len(meta.footprint_lonlat) == 5  # 4 corners + closing point, centre excluded
    lon, lat = meta.footprint_lonlat[0]
    assert (lon, lat) == pytest.approx((10.7960234, 47.7875252))
    assert meta.start_time.year == 2017 and meta.stop_time > meta.start_time
    assert set(meta.cover) >= {"cloudCover", "hazeCover", "cirrusCover", "snowCover"}
    assert meta.tile_id == "01" and meta.datatake_id == "0000326721"
    assert meta.projection == "UTM_Zone32_North"


def test_product_name_fields():
    n = parse_product_name(OFFICIAL.replace("-METADATA.XML", ""))
    assert n == {
        "datatake": "0000326721",
        "start": "20170626T102020",
        "tile": "001",
        "version": "000204",
        "processed": "20200406T201930",
    }
    with pytest.raises(ProductError, match="naming convention"):
        parse_product_name("ENMAP_L2A_foo")


def test_external_entity_is_refused_and_never_read(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET")
    xml = f"""<?xml version="1.0"?>
<!DOCTYPE level_X [<!ENTITY xxe SYSTEM "file://{secret}">]>
<level_X><base><revision>&xxe;</revision></base></level_X>""".encode()
    with pytest.raises(ProductError, match="not safe") as err:
        parse_metadata(xml, product="hostile-product")
    assert "hostile-product" in str(err.value)
    assert "TOP-SECRET" not in str(err.value)


def test_entity_expansion_bomb_fails_fast():
    bomb = b"""<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">
<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]><level_X>&lol3;</level_X>"""
    with pytest.raises(ProductError, match="bomb-product"):
        parse_metadata(bomb, product="bomb-product")


def test_missing_pieces_name_the_product(archive_copy):
    product = sorted(p for p in archive_copy.iterdir() if p.is_dir())[0]
    xml = next(product.glob("*-METADATA.XML"))
    xml.unlink()
    with pytest.raises(ProductError, match=f"{product.name}: METADATA.XML is missing"):
        open_product(product)


def test_band_count_mismatch_names_the_product(archive_copy):
    product = sorted(p for p in archive_copy.iterdir() if p.is_dir())[0]
    xml = next(product.glob("*-METADATA.XML"))
    text = xml.read_text()
    for _ in range(2):  # band 224 of bandCharacterisation and of bandStatistics
        start = text.index('<bandID number="224">')
        end = text.index("</bandID>", start) + len("</bandID>")
        text = text[:start] + text[end:]
    xml.write_text(text)
    with pytest.raises(ProductError, match="image has 224 bands but METADATA.XML describes 223"):
        open_product(product)


def test_synthetic_product_reads_by_window_and_gain(tiny_archive):
    from rasterio.windows import Window

    product = open_product(sorted(p for p in tiny_archive.iterdir() if p.is_dir())[0])
    raw = product.read(Window(40, 40, 8, 8))
    refl = product.read_reflectance(Window(40, 40, 8, 8))
    assert raw.shape == (224, 8, 8) and raw.dtype == np.int16
    valid = raw != -32768
    assert np.allclose(refl[valid], raw[valid] * 1e-4, atol=1e-6)
    assert product.read_mask("QL_QUALITY_CLOUD", Window(0, 0, 8, 8)).dtype == bool
