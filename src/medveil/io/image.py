"""One image type and one reader/writer for every supported format.

:class:`MedicalImage` carries the stored pixel values plus what is needed to write them back in
the same format: bit depth, sign, channel layout and the format's own metadata (a pydicom
``Dataset``, a nibabel header and affine). Readers return stored integers as they are on disk,
never rescaled.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from medveil.errors import InputError
from medveil.plugins import Registry, load_plugins


@dataclass(frozen=True)
class MedicalImage:
    """Pixels of one file and what is needed to write them back.

    Attributes
    ----------
    pixels : ndarray
        Stored values. ``(H, W)`` grayscale, ``(H, W, C)`` colour (``channel_axis=-1``),
        ``(F, H, W[, C])`` multi-frame DICOM / multi-page TIFF, NIfTI volumes in file order.
    format : str
        ``"dicom"``, ``"nifti"``, ``"png"``, ``"jpeg"``, ``"tiff"`` or ``"npy"``.
    bits : int
        Significant bits per sample (DICOM *Bits Stored*; the dtype's width elsewhere).
    channel_axis : int or None
        ``-1`` when the last axis holds colour channels.
    meta : Any
        Format-specific header (pydicom ``Dataset``, nibabel image); ``None`` for raster/NumPy.
    coded : bool
        The pixels are a key's codes, not the stored values: writers drop what describes the
        values (DICOM rescale, windows and LUTs; NIfTI's scaling).
    """

    pixels: np.ndarray
    format: str
    bits: int
    channel_axis: int | None = None
    meta: Any = None
    coded: bool = False

    def replace(self, **changes: Any) -> "MedicalImage":
        """Return a copy with ``changes`` (field names and values) applied."""
        return dataclasses.replace(self, **changes)

    def planes(self) -> np.ndarray:
        """Return the image as a stack of 2-D planes, ``(n, H, W)`` or ``(n, H, W, C)``.

        NIfTI planes are axial ``(x, y)`` slices; other formats stack frames / pages.
        """
        if self.format == "nifti":
            volume = self.pixels.reshape(self.pixels.shape[0], self.pixels.shape[1], -1)
            return np.moveaxis(volume, -1, 0)
        plane_dims = 3 if self.channel_axis is not None else 2
        return self.pixels.reshape((-1,) + self.pixels.shape[-plane_dims:])

    def middle_plane(self) -> np.ndarray:
        """Return the middle 2-D plane of :meth:`planes`, ``(H, W)`` or ``(H, W, C)``: a volume's central slice."""
        planes = self.planes()
        return planes[len(planes) // 2]

    def display_planes(self) -> np.ndarray:
        """:meth:`planes` turned as a viewer shows them (NIfTI slices rotated so anterior is up)."""
        planes = self.planes()
        return np.rot90(planes, axes=(1, 2)) if self.format == "nifti" else planes

    def gray_if_equal_channels(self) -> "MedicalImage":
        """Return this image as grayscale where it is a grayscale picture stored as RGB; otherwise itself.

        A grayscale picture stored as RGB has three equal channels, as Br35H's JPEGs are.
        """
        pixels = self.pixels
        if self.channel_axis is not None and pixels.shape[-1] == 3 and (pixels[..., :1] == pixels[..., 1:]).all():
            return self.replace(pixels=np.ascontiguousarray(pixels[..., 0]), channel_axis=None)
        return self

    def with_display_planes(self, planes: np.ndarray) -> "MedicalImage":
        """Return this image with its pixels replaced by ``planes`` laid out as :meth:`display_planes` gives them."""
        if self.format == "nifti":
            volume = np.moveaxis(np.rot90(planes, k=-1, axes=(1, 2)), 0, -1)
            return self.replace(pixels=np.ascontiguousarray(volume.reshape(self.pixels.shape)))
        return self.replace(pixels=np.ascontiguousarray(planes.reshape(self.pixels.shape)))


@dataclass(frozen=True)
class Format:
    """One file format medveil reads (and perhaps writes), as :data:`FORMATS` registers it.

    Attributes
    ----------
    name : str
        What :attr:`MedicalImage.format` says (``"dicom"``, ``"png"``, ...); taken once.
    suffixes : tuple of str
        Lower-case suffixes that name it (``".nii.gz"`` whole); each belongs to one format.
    read, write : callable
        ``read(path) -> MedicalImage`` (stored values, within :func:`decoded_budget`);
        ``write(path, image)``, or None for a format obfuscated output is never written in.
    writes_as : str
        The format obfuscated output is written in (lossy JPEG becomes PNG).
    deidentify : callable, optional
        ``(meta, secret, *, text_masked, copy, clean_descriptors) -> meta`` without identities.
    sniff : callable, optional
        Recognises a file with no suffix by its content (DICOM's ``DICM``).
    declares_burned_in_text : callable, optional
        ``meta -> bool``: the header says the pixels hold text.
    """

    name: str
    suffixes: tuple[str, ...]
    read: Callable[[Path], MedicalImage]
    write: Callable[[Path, MedicalImage], None] | None
    writes_as: str
    deidentify: Callable[..., Any] | None = None
    sniff: Callable[[Path], bool] | None = None
    declares_burned_in_text: Callable[[Any], bool] | None = None


# Formats by name, as schemes and attacks are: a name is taken once; plugins join through the
# "medveil.formats" entry-point group. _BY_SUFFIX finds them by a path's suffix.
FORMATS: Registry[Format] = Registry("format", "medveil.formats", missing=InputError)
_BY_SUFFIX: dict[str, Format] = {}


def register_format(fmt: Format) -> Format:
    """Add ``fmt`` to :data:`FORMATS`; a name or suffix already taken is refused (ValueError)."""
    taken = [s for s in fmt.suffixes if s in _BY_SUFFIX]
    if taken:
        raise ValueError(f"format {fmt.name!r}: suffix {taken[0]} is already {_BY_SUFFIX[taken[0]].name}'s")
    FORMATS.add(fmt.name, fmt)
    _BY_SUFFIX.update((s, fmt) for s in fmt.suffixes)
    return fmt


def suffix_of(path: str | os.PathLike) -> str:
    """Return a file name's suffix, lower case, as the formats go by it: ``.nii.gz`` whole."""
    name = Path(path).name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else Path(path).suffix.lower()


def format_of(path: str | os.PathLike) -> Format:
    """Return the format a path's name says it holds (or, with no suffix, its content); :class:`InputError` if none."""
    path = Path(path)
    suffix = suffix_of(path)
    if suffix not in _BY_SUFFIX:
        load_plugins(FORMATS.group)  # a plugin's format registers when its module is imported
    if suffix in _BY_SUFFIX:
        return _BY_SUFFIX[suffix]
    if suffix == "" and path.is_file():
        for fmt in FORMATS:
            if fmt.sniff is not None and fmt.sniff(path):
                return fmt
    known = sorted(_BY_SUFFIX)
    raise InputError(f"{path}: unsupported format '{suffix or path.name}' (supported: {' '.join(known)})")


def format_named(name: str) -> Format:
    """Return the registered format called ``name`` (``"dicom"``, ``"png"``, ...); :class:`InputError` if none is."""
    return FORMATS[name]


def is_supported(path: str | os.PathLike) -> bool:
    """Whether medveil reads ``path`` (by its suffix, or by its content for a suffix-less DICOM file)."""
    try:
        format_of(path)
    except InputError:
        return False
    return True


def output_name(relpath: str | os.PathLike, source: str | os.PathLike | None = None) -> Path:
    """Where the obfuscated copy of ``relpath`` goes: same name, except lossy JPEG becomes PNG.

    ``source`` is the file itself where ``relpath`` is relative to another folder than the current
    one: a suffix-less DICOM file is recognised by reading it.
    """
    relpath = Path(relpath)
    fmt = format_of(source if source is not None else relpath)
    if fmt.writes_as == fmt.name:
        return relpath
    target = format_named(fmt.writes_as)
    return relpath.with_name(relpath.name[: -len(suffix_of(relpath))] + target.suffixes[0])


BUDGET_ENV = "MEDVEIL_MAX_DECODED_MB"
DEFAULT_BUDGET_MB = 2048


def decoded_budget() -> int:
    """Bytes one file may decode to: ``MEDVEIL_MAX_DECODED_MB`` megabytes (default 2048).

    Every reader checks what a file declares (size x samples x bytes per sample, or what a deflated
    stream inflates to) against it before it decodes, so a small file that would decode into
    gigabytes (a decompression bomb) fails in one line instead of exhausting memory.
    """
    value = os.environ.get(BUDGET_ENV, str(DEFAULT_BUDGET_MB))
    try:
        megabytes = int(value)
    except ValueError:
        raise InputError(f"{BUDGET_ENV} must be a whole number of megabytes, got {value!r}") from None
    return megabytes << 20


def check_decoded_size(nbytes: int, what: str) -> None:
    """Raise :class:`InputError` where ``nbytes`` (what ``what`` declares it decodes to) exceeds :func:`decoded_budget`."""
    budget = decoded_budget()
    if nbytes > budget:
        raise InputError(f"{what} would decode to {nbytes / 2**20:,.0f} MB, over the per-file budget of "
                         f"{budget >> 20:,} MB (a decompression bomb, or raise {BUDGET_ENV}); not decoded")


def read_image(path: str | os.PathLike) -> MedicalImage:
    """Read one image file of any supported format.

    Raises :class:`InputError` (one line, naming the file) for a missing, unsupported, corrupt
    or truncated file.
    """
    path = Path(path)
    fmt = format_of(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        image = fmt.read(path)
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from None
    except Exception as exc:  # decoders raise anything from ValueError to struct.error on bad bytes
        raise InputError(f"{path}: cannot read {fmt.name} ({exc.__class__.__name__}: {first_line(exc)})") from None
    if image.pixels.size == 0:
        raise InputError(f"{path}: image has no pixels")
    if not image.pixels.dtype.isnative:  # big-endian files: metrics, writers and schemes all get native arrays
        image = image.replace(pixels=image.pixels.astype(image.pixels.dtype.newbyteorder("=")))
    return image


def write_image(path: str | os.PathLike, image: MedicalImage) -> None:
    """Write ``image`` in its own format to ``path`` (whose suffix must name that format)."""
    path = Path(path)
    fmt = format_named(image.format)
    if fmt.write is None:
        raise InputError(f"{path}: writing {fmt.name} is not supported (lossy); write {fmt.writes_as} instead")
    fmt.write(path, image)


def first_line(exc: BaseException) -> str:
    """``exc``'s message on one line: its first line, and what follows where that line ends in a colon."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return "no details"
    return "; ".join(lines).replace(":;", ":") if lines[0].endswith(":") else lines[0]
