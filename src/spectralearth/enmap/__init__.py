"""Readers for EnMAP L2A products and generic hyperspectral images."""

from spectralearth.enmap.product import (  # noqa: F401
    QL_LAYERS,
    L2AProduct,
    ProductError,
    find_products,
    find_scenes,
    open_product,
    open_scene,
    parse_product_name,
)
