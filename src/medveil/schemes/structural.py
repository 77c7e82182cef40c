"""Structural de-identification (paper SD): vectorize → order-preserving encryption of coordinates → rasterize.

Each image is resized to ``size``×``size`` (paper SD: ~50×50 suits CIFAR-10; ``medveil structural
tune`` finds the size for other data), traced into SVG paths with vtracer (paper SD used
imagetracerjs), every path coordinate and the canvas width and height are encrypted with an
order-preserving map, and the shifted drawing is rendered with resvg at ``raster``×``raster``
(paper SD: 224×224), so the service never sees the encrypted numbers themselves.

The order-preserving map. Paper SD used pyope (Boldyreva et al.), whose ideal object is a
uniformly random strictly increasing function from the input domain into the output range
(−99999..99999). pyope samples it lazily with ~2 ms of hypergeometric sampling per value, and its
ciphertexts change between versions. Here the domain is finite and small — the integer coordinates
``-size..2·size`` of the canvas, with margin for spline control points outside it — so we sample the
same object outright, once per key: a uniformly random ``D``-subset of the ``2·99999 + 1`` range
values, drawn from the key stream (Floyd's algorithm) and sorted. Fractional coordinates (vtracer
emits sub-pixel splines) are mapped piecewise-linearly between their integer neighbours, which
keeps the map strictly increasing and equal to the OPE on the grid. As in paper SD, ``E(0)`` is
subtracted so the canvas starts at 0, and the same map serves x and y. The map depends only on the
key and ``size``, never on a library version.

Images: ``(..., H, W)`` uint8 for ``channels=1``, ``(..., H, W, 3)`` for ``channels=3``; any
``H, W`` (resized first). Output: uint8 ``(..., raster, raster[, 3])``: unlike the pixel schemes, the
output size is the key's, not the input's.
"""

from __future__ import annotations

import io
import itertools
import re
from typing import Any, Callable, Mapping

import numpy as np
from typing_extensions import override

from medveil.errors import InputError, ParameterError
from medveil.parallel import map_ordered
from medveil.plugins import Parameter
from medveil.schemes.base import Scheme, check_params, image_shape_8bit, int_param, register

OPE_RANGE = 2 * 99999 + 1  # paper SD's output range −99999..99999
_PATH = re.compile(r'<path d="([^"]*)" fill="(#[0-9A-Fa-f]{6})" transform="translate\((-?[\d.]+),(-?[\d.]+)\)"/>')
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE]-?\d+)?")
_SPLIT = re.compile(f"({_NUMBER.pattern})")  # splits a path's text around its numbers, keeping them


def vectorize(image: np.ndarray) -> str:
    """SVG text of vtracer's colour tracing of one ``(H, W)`` or ``(H, W, 3)`` uint8 image."""
    import vtracer
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).convert("RGB").save(buffer, "PNG", compress_level=0)
    return vtracer.convert_raw_image_to_svg(buffer.getvalue(), img_format="png", colormode="color")


def shift_coordinates(svg: str, transform: Callable[[np.ndarray], np.ndarray], width: float, height: float) -> str:
    """Rewrite vtracer's SVG with every coordinate ``c`` replaced by ``transform(c)``.

    Paths are made absolute first (each path's ``translate`` is folded into its coordinates: vtracer
    writes only ``M``, ``L``, ``C`` and ``Z`` commands with x, y pairs). The canvas becomes
    ``transform(width) × transform(height)``.
    """
    # Every path's numbers parsed, shifted, mapped and formatted in one pass: a loop per path took
    # 2.4 ms of an image's 6 (tracing 1.8, rendering 1.7); this takes half of it, to the same bytes.
    paths = _PATH.findall(svg)
    split = [_SPLIT.split(d) for d, _, _, _ in paths]  # text, number, text, ..., number, text
    for (d, _, _, _), parts in zip(paths, split):
        if len(parts) // 2 % 2 or re.search(r"[^MLCZ\d\s.eE-]", d):
            raise InputError("unexpected SVG path from the vectorizer (expected absolute M/L/C/Z with x, y pairs)")
    pairs = np.array([len(parts) // 4 for parts in split], dtype=np.int64)
    values = np.array(list(map(float, itertools.chain.from_iterable(parts[1::2] for parts in split))), np.float64)
    values[0::2] += np.repeat(np.array([float(tx) for _, _, tx, _ in paths]), pairs)
    values[1::2] += np.repeat(np.array([float(ty) for _, _, _, ty in paths]), pairs)
    mapped = transform(values).tolist()
    texts = (("%.3f\n" * len(mapped)) % tuple(mapped)).split("\n")
    out, at = [], 0
    for (_, fill, _, _), parts in zip(paths, split):
        parts[1::2] = texts[at:at + len(parts) // 2]
        at += len(parts) // 2
        out.append(f'<path d="{"".join(parts)}" fill="{fill}"/>')
    w, h = transform(np.array([width, height], dtype=np.float64))
    return (f'<svg version="1.1" xmlns="http://www.w3.org/2000/svg" width="{w:.3f}" height="{h:.3f}" '
            f'viewBox="0 0 {w:.3f} {h:.3f}">' + "".join(out) + "</svg>")


def rasterize(svg: str, output: int, channels: int) -> np.ndarray:
    """Render ``svg`` (its whole canvas) at ``output``×``output`` on black; uint8 ``(output, output[, 3])``."""
    import resvg_py
    from PIL import Image

    png = resvg_py.svg_to_bytes(svg_string=svg, width=output, height=output, background="#000000",
                                skip_system_fonts=True)
    return np.asarray(Image.open(io.BytesIO(png)).convert("L" if channels == 1 else "RGB"))


def order_preserving_map(stream, domain: int, range_size: int = OPE_RANGE) -> np.ndarray:
    """Return a uniformly random strictly increasing map ``{0..domain-1} -> {0..range_size-1}``, as int64 values.

    Floyd's algorithm draws a uniform ``domain``-subset of the range from the key ``stream``; sorted,
    it is the map.
    """
    if domain > range_size:
        raise ParameterError(f"an order-preserving map of {domain} values needs a range at least as large")
    draws = stream.below(np.arange(range_size - domain + 1, range_size + 1, dtype=np.int64)).tolist()
    chosen: set[int] = set()
    for j, t in zip(range(range_size - domain, range_size), draws):
        chosen.add(j if t in chosen else t)
    return np.array(sorted(chosen), dtype=np.int64)


@register
class StructuralDeidentification(Scheme):
    """Vectorize, encrypt coordinates order-preservingly, rasterize (see the module docstring).

    Params: ``size`` (input resize, default 50), ``raster`` (output size, default 64), ``channels`` 1 or 3.
    """

    name = "structural"
    background_params = frozenset({"raster", "channels"})

    parameters = (Parameter("size", int, 50, "images are resized to size x size before tracing"),
                  Parameter("raster", int, 64, "output size: the de-identified raster is raster x raster"), Parameter("channels", int, 1, "1 (grayscale) or 3 (colour)"))

    @override
    @classmethod
    def validate_params(cls, params: Mapping[str, Any]) -> dict[str, Any]:
        check_params(params, {"size", "raster", "channels"}, cls.name)
        return {"size": int_param(params, "size", 50, low=8), "raster": int_param(params, "raster", 64, low=8),
                "channels": int_param(params, "channels", 1, allowed=(1, 3))}

    def __init__(self, key):
        super().__init__(key)
        size = self.params["size"]
        # Integer coordinates -size..2*size: the canvas plus a margin for control points outside it.
        table = order_preserving_map(self.key.stream(f"ope/{size}"), 3 * size + 1).astype(np.float64)
        self._grid = np.arange(-size, 2 * size + 1, dtype=np.float64)
        self._table = table - table[size]  # paper SD's offset: E(0) becomes 0

    def encrypt_coordinates(self, values: np.ndarray) -> np.ndarray:
        """Return the key's order-preserving map of coordinates (piecewise-linear between integers)."""
        return np.interp(values, self._grid, self._table)

    def deidentify(self, image: np.ndarray, transform: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
        """One image through the pipeline; ``transform`` replaces the key's map (identity: vectorization only)."""
        from PIL import Image

        size, raster, channels = self.params["size"], self.params["raster"], self.params["channels"]
        resized = np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR))
        svg = shift_coordinates(vectorize(resized), transform or self.encrypt_coordinates, size, size)
        return rasterize(svg, raster, channels)

    @override
    def __call__(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images)
        shape = image_shape_8bit(images, self.params["channels"], self.name)
        batch = images.shape[: images.ndim - len(shape)]
        flat = images.reshape((-1, *shape))
        out = np.stack(map_ordered(_deidentify, (self,), list(flat))) if len(flat) else np.empty((0,), np.uint8)
        side = self.params["raster"]
        return out.reshape(batch + (side, side) + shape[2:])


def _deidentify(scheme: StructuralDeidentification, image: np.ndarray) -> np.ndarray:
    """``scheme.deidentify(image)``, for a worker of :func:`~medveil.parallel.map_ordered` (which needs a module-level function)."""
    return scheme.deidentify(image)
