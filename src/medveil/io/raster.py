"""PNG, JPEG and TIFF. Pillow for PNG/JPEG, tifffile for TIFF (16-bit, signed and multi-page).

Each library loads when a file of its format does: a run over other formats does not pay for it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medveil.errors import InputError
from medveil.io.image import Format, MedicalImage, check_decoded_size, register_format

_CONVERTED_TO_RGBA = ("P", "PA", "LA")  # at most: decoded, then converted below
_PIL_MODES = {"L": np.uint8, "RGB": np.uint8, "RGBA": np.uint8, "I;16": np.uint16, "I;16B": np.uint16, "I;16L": np.uint16}


def _read_pil(path: Path, fmt: str) -> MedicalImage:
    from PIL import Image

    # The decoding budget below replaces Pillow's own pixel-count limit, which refuses some files the
    # budget allows and allows 16-bit and RGBA files of four times the bytes it means to.
    Image.MAX_IMAGE_PIXELS = None
    with Image.open(path) as opened:  # reads the header only
        im: Image.Image = opened
        band_bytes = 4 if im.mode in ("I", "F") else 2 if im.mode.startswith("I;16") else 1
        bands = 4 if im.mode in _CONVERTED_TO_RGBA else len(im.getbands())
        check_decoded_size(im.width * im.height * bands * band_bytes, f"{im.width}x{im.height} {im.mode} {fmt}")
        im.load()  # decode now so truncation is reported here
        if im.mode in ("1", "P", "PA", "LA"):
            im = im.convert("RGBA" if "A" in im.mode or im.info.get("transparency") is not None else
                            ("L" if im.mode == "1" else "RGB"))
        if im.mode == "I":  # 16-bit PNGs from some writers come as 32-bit ints
            pixels = np.asarray(im)
            if pixels.min() < 0 or pixels.max() > 65535:
                raise InputError(f"32-bit integer {fmt} is not supported")
            pixels = pixels.astype(np.uint16)
        elif im.mode in _PIL_MODES:
            pixels = np.asarray(im, dtype=_PIL_MODES[im.mode])
        else:
            raise InputError(f"{fmt} mode {im.mode} is not supported")
    return MedicalImage(
        pixels=np.ascontiguousarray(pixels),
        format=fmt,
        bits=8 * pixels.dtype.itemsize,
        channel_axis=-1 if pixels.ndim == 3 else None,
    )


def read_png(path: Path) -> MedicalImage:
    """Return a PNG's stored values (8- or 16-bit, grayscale or colour)."""
    return _read_pil(path, "png")


def read_jpeg(path: Path) -> MedicalImage:
    """Return a JPEG's 8-bit values (its obfuscated copy is written as PNG, which keeps codes exactly)."""
    return _read_pil(path, "jpeg")


def write_png(path: Path, image: MedicalImage) -> None:
    """Write ``image`` as PNG (8- or 16-bit grayscale, or colour)."""
    from PIL import Image

    pixels = image.pixels
    if pixels.dtype == np.uint16 and pixels.ndim == 2:
        Image.fromarray(pixels).save(path, format="PNG")  # Pillow writes I;16 as 16-bit grayscale
    elif pixels.dtype == np.uint8 and (pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[2] in (3, 4))):
        Image.fromarray(pixels).save(path, format="PNG")
    else:
        raise InputError(f"PNG cannot hold a {pixels.dtype} array of shape {pixels.shape}; use TIFF")


def read_tiff(path: Path) -> MedicalImage:
    """Return a TIFF's stored values (every page), within the decoding budget."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        check_decoded_size(int(np.prod(series.shape, dtype=np.int64)) * series.dtype.itemsize,
                           f"TIFF of shape {tuple(series.shape)} {series.dtype}")
        pixels = series.asarray()
        photometric = getattr(series.pages[0], "photometric", None)
    interleaved_rgb = photometric == tifffile.PHOTOMETRIC.RGB and pixels.shape[-1] in (3, 4)
    channel_axis = -1 if interleaved_rgb else None
    return MedicalImage(pixels=np.ascontiguousarray(pixels), format="tiff",
                        bits=8 * pixels.dtype.itemsize, channel_axis=channel_axis)


def write_tiff(path: Path, image: MedicalImage) -> None:
    """Write ``image`` as TIFF (grayscale, or interleaved RGB)."""
    import tifffile

    photometric = "rgb" if image.channel_axis is not None else "minisblack"
    tifffile.imwrite(path, image.pixels, photometric=photometric, compression="zlib")


register_format(Format("png", (".png",), read_png, write_png, "png"))
register_format(Format("jpeg", (".jpg", ".jpeg"), read_jpeg, None, "png"))
register_format(Format("tiff", (".tif", ".tiff"), read_tiff, write_tiff, "tiff"))
