"""``toyimg``: a raw 8-bit image file (two little-endian uint16 for height and width, then the pixels): a test format."""

from pathlib import Path

import numpy as np

from medveil.io.image import Format, MedicalImage, register_format


def read_toyimg(path: Path) -> MedicalImage:
    data = Path(path).read_bytes()
    h, w = np.frombuffer(data[:4], "<u2")
    return MedicalImage(np.frombuffer(data[4:], np.uint8).reshape(int(h), int(w)).copy(), "toyimg", 8)


def write_toyimg(path: Path, image: MedicalImage) -> None:
    Path(path).write_bytes(np.array(image.pixels.shape, "<u2").tobytes() + image.pixels.astype(np.uint8).tobytes())


register_format(Format("toyimg", (".toyimg",), read_toyimg, write_toyimg, "toyimg"))
