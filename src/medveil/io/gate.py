"""The one way out of the hospital: everything that sends pixels or names to the service passes here.

A file goes through the gate in one order, whatever path it takes:

1. read its stored values (never rescaled), within the per-file decoding budget
   (:func:`medveil.io.image.decoded_budget`);
2. refuse what a key cannot map (1-bit masks, samples wider than 16 bits);
3. screen the plain pixels for burned-in text (``refuse``, ``mask`` or ``off``);
4. obfuscate the pixels with the key and de-identify the header at every depth;
5. hand over under a keyed pseudonym (:meth:`Gate.name`) unless names are kept on purpose.

:data:`ENTRY_POINTS` lists every way out that calls it; ``tests/test_gate.py`` sends a drawn-text
image and a PHI-named file through each of them. A path that sends only pixels (the service's)
drops the header whole, so step 4's header part is the writers'.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path, PurePosixPath

import numpy as np

from medveil._files import atomic_path
from medveil.errors import InputError, MedveilError, RefusedError
from medveil.io.burned_in import POLICIES, describe, find_text, mask_text
from medveil.io.image import MedicalImage, first_line, format_named, read_image, suffix_of, write_image
from medveil.keys import Key
from medveil.schemes import Scheme

# Every way pixels or names leave the hospital, and the Gate method it goes through.
ENTRY_POINTS = {
    "medveil obfuscate FILE": "Gate.write",
    "medveil obfuscate FOLDER (one process, --workers, --scheduler, fsspec URLs)": "Gate.write, Gate.name",
    "medveil deidentify FILE / FOLDER (the gate with obfuscate=False)": "Gate.write, Gate.name",
    "medveil gateway / medveil pull (medveil.gateway.Pipeline: spool, gate, forward)":
        "Gate.write, then Gate.read for the service destination",
    "medveil client upload / Client.upload_folder / upload_segmentation_folder": "Gate.read",
    "medveil client predict / Client.predict_files": "Gate.read",
    "Client.upload / upload_segmentation / predict (arrays the caller made)": "Gate.screen",
    "medveil.data.ObfuscatedFolder": "Gate.read",
    "medveil.transforms.Obfuscate / ObfuscateD (an image MONAI's LoadImage read from a file)": "Gate.read",
}

_NAME_DIGITS = 16
ANOTHER_KEY = "another key: "  # a refusal's reason, then the keygen command for the key the samples need  # hex digits of a pseudonym: 64 bits, no collision in any archive's lifetime


def check_mappable(image: MedicalImage) -> None:
    """Refuse samples no key maps meaningfully (:class:`InputError`)."""
    if image.bits == 1:
        raise RefusedError("1-bit samples (a binary mask such as a DICOM SEG): mapping two values hides nothing; "
                           "not obfuscated", "1-bit samples")
    if image.pixels.dtype.kind in "iu" and image.pixels.dtype.itemsize > 2:
        raise RefusedError(f"{8 * image.pixels.dtype.itemsize}-bit samples (an RT dose, say): keys map integers "
                           "of at most 16 bits; not obfuscated", "samples wider than 16 bits")


def key_command(image: MedicalImage) -> str | None:
    """Return the ``medveil keygen`` command for a key that maps ``image``'s samples; None where no key does.

    8-bit data get the default key (the setting the privacy cards rate best); wider samples the one
    scheme that maps them, intensity at their bit depth.
    """
    dtype = image.pixels.dtype
    if dtype.kind not in "iu" or dtype.itemsize > 2 or not 2 <= image.bits <= 16:
        return None
    if dtype == np.uint8:
        return "medveil keygen"
    return f"medveil keygen --scheme intensity --bits {image.bits}" + (" --signed" if dtype.kind == "i" else "")


def check_key_fits(image: MedicalImage, scheme: Scheme) -> None:
    """Refuse samples wider or narrower than the key maps, naming the key that would map them."""
    wanted = scheme.input_dtype
    have = image.pixels.dtype
    if have.kind not in "iu" or have.itemsize == wanted.itemsize:
        return  # float input and values outside the key's range are the scheme's to judge
    command = key_command(image)
    signed = "signed " if have.kind == "i" else ""
    raise RefusedError(f"{image.bits}-bit {signed}samples, but this key maps {8 * wanted.itemsize}-bit ones; "
                       f"a key for them: {command}", ANOTHER_KEY + str(command))


def fit_channels(image: MedicalImage, scheme: Scheme) -> MedicalImage:
    """``image`` laid out as the key's images are.

    A grayscale picture stored as RGB (three equal channels, as Br35H's JPEGs) becomes grayscale for a grayscale
    key; a colour image with a grayscale key, or the reverse, is refused (one line naming the key that fits) rather
    than obfuscated with the key laid over the wrong axes.
    """
    wanted = scheme.channels
    colour = image.channel_axis is not None
    if wanted is None or colour == (wanted == 3):
        return image
    if colour and wanted == 1 and (gray := image.gray_if_equal_channels()) is not image:
        return gray
    have = "colour" if colour else "grayscale"
    fits = f"medveil keygen --scheme {scheme.name} --param channels={3 if colour else 1}"
    raise RefusedError(f"{have} image, but this {scheme.name} key is for {'colour' if wanted == 3 else 'grayscale'} "
                       f"images; a key for it: {fits}", ANOTHER_KEY + fits)


def check_policy(policy: str) -> str:
    """``policy`` if it is a burned-in text policy (refuse, mask, off); :class:`InputError` if not."""
    if policy not in POLICIES:
        raise InputError(f"burned-in text policy must be one of {', '.join(POLICIES)}, got {policy!r}")
    return policy


def screen_text(image: MedicalImage, policy: str = "refuse") -> tuple[MedicalImage, bool]:
    """Look for text burned into ``image``'s plain pixels and apply ``policy`` to it.

    ``refuse`` raises :class:`RefusedError` when OCR reads text or the header declares it; ``mask``
    sets what OCR reads to the plane's minimum, checks that OCR reads nothing more (three rounds at
    most) and returns the masked image with True; ``off`` returns the image unchanged.
    """
    if check_policy(policy) == "off":
        return image, False
    declares = format_named(image.format).declares_burned_in_text
    flagged = declares is not None and image.meta is not None and declares(image.meta)
    planes = image.display_planes()
    boxes = find_text(planes)
    if policy == "refuse":
        if boxes:
            raise RefusedError(f"text burned into the pixels ({describe(boxes)}); refused "
                               "(--burned-in-text mask masks it)", "burned-in text")
        if flagged:
            raise RefusedError("header declares burned-in text (BurnedInAnnotation YES); refused "
                               "(--burned-in-text mask masks the text OCR finds)", "burned-in text declared")
        return image, False
    if not boxes:
        if flagged:
            raise RefusedError("header declares burned-in text (BurnedInAnnotation YES) but OCR finds none to mask; "
                               "refused", "burned-in text declared")
        return image, False
    for _ in range(3):
        planes = mask_text(planes, boxes)
        boxes = find_text(planes)
        if not boxes:
            return image.with_display_planes(planes), True
    raise RefusedError(f"text still readable after masking ({describe(boxes)}); refused", "burned-in text")


def obfuscate_image(image: MedicalImage, scheme: Scheme, burned_in_text: str = "refuse",
                    copy: bool = True, keep_descriptors: bool = False, obfuscate: bool = True) -> MedicalImage:
    """Obfuscated pixels plus de-identified metadata, ready to write in the output format.

    ``burned_in_text`` is the :func:`screen_text` policy for text in the plain pixels. ``copy``
    False lets de-identification change ``image.meta`` itself instead of a copy (for a caller that
    read the image and keeps no other use of it). ``keep_descriptors`` keeps DICOM free text that
    PS3.15 Table E.1-1 does not list (the Clean Descriptors option is applied by default).
    ``obfuscate`` False de-identifies only: the checks, the screen and the header as above, the
    pixels as stored (masked where text was masked); the key still keys UIDs, names and dates.
    """
    check_mappable(image)
    if obfuscate:
        check_key_fits(image, scheme)
        image = fit_channels(image, scheme)
    image, masked = screen_text(image, burned_in_text)
    fmt = format_named(image.format)
    meta = image.meta
    if fmt.deidentify is not None and meta is not None:
        meta = fmt.deidentify(meta, dicom_uid_secret(scheme.key), text_masked=masked, copy=copy,
                              clean_descriptors=not keep_descriptors)
    if not obfuscate:
        return image.replace(format=fmt.writes_as, meta=meta)
    pixels = scheme(image.pixels)
    return image.replace(
        pixels=pixels,
        bits=scheme.output_bits or 8 * pixels.dtype.itemsize,
        format=fmt.writes_as,
        meta=meta,
        coded=True,
    )


def dicom_uid_secret(key: Key) -> bytes:
    """Return the secret every DICOM UID is keyed with under ``key`` (one for all files, so a study stays one study)."""
    return key.stream("io/dicom-uid").read(32)


def naming(error: MedveilError, path) -> InputError:
    """``error`` as one line that starts with ``path``; a refusal keeps its reason."""
    if isinstance(error, RefusedError):
        return RefusedError(f"{path}: {error}", error.reason)
    return InputError(f"{path}: {error}")


def pseudonym(secret: bytes, rel: str | os.PathLike) -> str:
    """Return the keyed stand-in for the relative path ``rel``: each folder and the file named by an HMAC.

    A folder's name is the HMAC of its own relative path, so files that shared a folder still do
    (a study stays together) and the same path gets the same name on every run under one key. The
    file's suffix is kept (``.nii.gz`` whole), since readers and writers go by it.
    """
    parts = Path(rel).parts
    named = [hmac.new(secret, "/".join(parts[:depth]).encode("utf-8", "surrogateescape"),
                      hashlib.sha256).hexdigest()[:_NAME_DIGITS] for depth in range(1, len(parts) + 1)]
    return "/".join(named) + suffix_of(parts[-1])


@dataclass(frozen=True)
class Gate:
    """The gate with its options fixed once: the key's scheme, the text policy, the names policy.

    Parameters
    ----------
    scheme : Scheme
        The key-bound scheme that obfuscates the pixels.
    burned_in_text : str
        ``refuse`` (default), ``mask`` or ``off`` (see :func:`screen_text`); checked here, once.
    keep_names : bool
        Hand files over under their own relative paths instead of keyed pseudonyms.
    keep_descriptors : bool
        Keep DICOM free text the de-identification table does not list (removed by default).
    obfuscate : bool
        False de-identifies only (``medveil deidentify``): pixels leave as stored, for a
        destination that is trusted with images but not with identities.
    """

    scheme: Scheme
    burned_in_text: str = "refuse"
    keep_names: bool = False
    keep_descriptors: bool = False
    obfuscate: bool = True

    def __post_init__(self) -> None:
        check_policy(self.burned_in_text)

    @property
    def policy(self) -> dict:
        """The options besides the scheme, as a folder run's workers receive them: ``Gate(scheme, **policy)``."""
        return {"burned_in_text": self.burned_in_text, "keep_names": self.keep_names,
                "keep_descriptors": self.keep_descriptors, "obfuscate": self.obfuscate}

    @cached_property
    def _names_secret(self) -> bytes:  # derived once per gate, not once per file
        return self.scheme.key.stream("io/names").read(32)

    def name(self, rel: str | os.PathLike) -> str:
        """Return the name ``rel`` (a relative POSIX path) leaves under: its keyed pseudonym, or itself with ``keep_names``."""
        if self.keep_names:
            return PurePosixPath(*Path(rel).parts).as_posix()
        return pseudonym(self._names_secret, rel)

    def read(self, path: str | os.PathLike) -> MedicalImage:
        """``path``'s plain image, checked and screened, for a path that sends only pixels (the service's).

        The caller obfuscates what it makes of the pixels (resized, one plane); the header is not
        returned de-identified and must not leave. Errors are one :class:`InputError` line naming ``path``.
        """
        image = read_image(path)
        try:
            check_mappable(image)
            image, _ = screen_text(image, self.burned_in_text)
        except MedveilError as exc:
            raise naming(exc, path) from None
        return image.replace(meta=None)

    def screen(self, images: np.ndarray) -> np.ndarray:
        """Check and screen arrays a caller made for the service, at the size they are given.

        ``(n, H, W)`` or colour ``(n, H, W, 3)``, checked as :meth:`read` checks a file's pixels; returns them
        (masked where the policy masks). They carry no header and no name.
        """
        image = MedicalImage(images, "npy", 8 * images.dtype.itemsize, -1 if images.ndim == 4 else None)
        try:
            check_mappable(image)
            image, _ = screen_text(image, self.burned_in_text)
        except MedveilError as exc:
            raise InputError(f"images handed to the service: {exc}") from None
        return image.pixels

    def image(self, image: MedicalImage, copy: bool = True) -> MedicalImage:
        """:func:`obfuscate_image` with this gate's options."""
        return obfuscate_image(image, self.scheme, self.burned_in_text, copy, self.keep_descriptors, self.obfuscate)

    def write(self, src: str | os.PathLike, dst: str | os.PathLike, overwrite: bool = False,
              durable: bool = True) -> None:
        """Pass the file ``src`` through the gate into ``dst`` (written atomically); refuses to overwrite unless asked.

        ``durable`` syncs ``dst`` to disk before returning (see :func:`medveil._files.atomic_path`).
        Every failure is an :class:`InputError` of one line naming ``src``.
        """
        src, dst = Path(src), Path(dst)
        if dst.exists() and not overwrite:
            raise InputError(f"{dst}: already exists; refusing to overwrite")
        if dst.resolve() == src.resolve():
            raise InputError(f"{src}: output would replace the original")
        image = read_image(src)
        try:
            out = self.image(image, copy=False)  # the image read here is ours
            dst.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(dst, durable=durable) as tmp:
                write_image(tmp, out)
        except MedveilError as exc:
            raise naming(exc, src) from None
        except Exception as exc:  # pydicom, nibabel and the OS raise anything from ValueError to OSError
            raise InputError(f"{src}: {exc.__class__.__name__}: {first_line(exc)}") from None


def obfuscate_file(src: str | os.PathLike, dst: str | os.PathLike, scheme: Scheme, overwrite: bool = False,
                   burned_in_text: str = "refuse", durable: bool = True) -> None:
    """One file through the gate: ``Gate(scheme, burned_in_text).write(src, dst, overwrite, durable)``."""
    Gate(scheme, burned_in_text).write(src, dst, overwrite, durable)
