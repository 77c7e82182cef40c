"""Obfuscation as a transform for torch and MONAI pipelines.

:class:`Obfuscate` is an array transform (MONAI's style: a callable on one image), and
:class:`ObfuscateD` its dictionary version (``keys`` name the items to obfuscate). Both take NumPy
arrays or torch tensors and give back the type they were given, on the same device:

- integer input must already be of the key's stored type (``scheme.input_dtype``: ``uint8`` for
  8-bit keys, ``uint16``/``int16`` for 12- or 16-bit CT/MR keys);
- float input (MONAI's ``LoadImage`` yields ``float32``) is accepted only when every value is a
  whole number the key's type can hold, and comes back as float codes of the same dtype;
- a tensor subclass such as MONAI's ``MetaTensor`` keeps its metadata.

One value convention, the CLI's: a key maps a file's *stored* values. MONAI's ``LoadImage`` gives
other values (DICOM rescaled to HU, NIfTI scaled, axes reversed), so an image that carries MONAI's
``filename_or_obj`` is read again from that file through the gate (:class:`medveil.io.Gate`: the
CLI's bit-depth checks and burned-in text screen), obfuscated as the CLI obfuscates it, and laid out
as MONAI laid it out. The transform places the two by finding the axis order, and the linear map
(rescale slope and intercept), under which MONAI's values equal the stored ones; an image it cannot
place (resized, cropped or reoriented before this transform) is refused: put the transform right
after ``LoadImage``/``EnsureChannelFirst``. Arrays with no file behind them are taken as stored values.

Images are laid out as the scheme takes them: ``(H, W)`` or ``(..., H, W)`` for grayscale keys
(a channel-first ``(1, H, W)`` image is a batch of one), ``(..., H, W, 3)`` for colour keys; with
``channel_first=True`` a colour image ``(3, H, W)`` is moved to channels-last and back.
"""

from __future__ import annotations

import itertools
from typing import Any, Hashable, Mapping, Sequence, cast

import numpy as np

from medveil.errors import InputError
from medveil.keys import Key
from medveil.schemes import Scheme, from_key


def place(stored: np.ndarray, values: np.ndarray) -> tuple[int, ...] | None:
    """Return the axis order that lays ``stored`` out as ``values`` (singleton axes aside).

    Where some linear map ``values = a * stored + b`` (a DICOM rescale, a NIfTI scaling) holds exactly; ``None``
    when none does.
    """
    shape = tuple(n for n in values.shape if n != 1)
    want = values.astype(np.float64).reshape(shape)
    for order in itertools.permutations(range(stored.ndim)):
        moved = np.transpose(stored, order).astype(np.float64)
        if tuple(n for n in moved.shape if n != 1) != shape:
            continue
        moved = moved.reshape(shape)
        low, high = np.unravel_index(moved.argmin(), shape), np.unravel_index(moved.argmax(), shape)
        slope = (want[high] - want[low]) / (moved[high] - moved[low]) if moved[high] != moved[low] else 1.0
        if slope != 0 and np.allclose(want, slope * moved + (want[low] - slope * moved[low]), rtol=1e-6,
                                      atol=1e-3 * abs(slope)):
            return order
    return None


def _to_numpy(image: Any) -> tuple[np.ndarray, Any]:
    """Return the image as NumPy, and the tensor it came from (or None)."""
    if hasattr(image, "detach") and hasattr(image, "cpu"):  # a torch tensor, without importing torch here
        return image.detach().cpu().numpy(), image
    return np.asarray(image), None


class Obfuscate:
    """Obfuscate one image (array or tensor) with ``key`` (see the module docstring).

    Parameters
    ----------
    key : Key or Scheme
        A loaded key (``Key.load(path)``) or a scheme already made from one.
    channel_first : bool
        Colour keys only, for arrays with no file behind them: the image's channels come first, ``(3, H, W)``.
    burned_in_text : str
        The gate's policy for text burned into a file's pixels: ``refuse``, ``mask`` or ``off``.
    """

    def __init__(self, key: Key | Scheme, channel_first: bool = False, burned_in_text: str = "refuse"):
        from medveil.io import Gate

        self.scheme = key if isinstance(key, Scheme) else from_key(key)
        self.channel_first = channel_first
        self.gate = Gate(self.scheme, burned_in_text)

    def _from_file(self, values: np.ndarray, source: str) -> np.ndarray:
        """Return the CLI's codes for the file MONAI read ``values`` from, laid out as ``values``."""
        stored = self.gate.read(source).pixels
        order = place(stored, values)
        if order is None:
            raise InputError(f"{source}: cannot place the image MONAI gives ({values.shape}) on the file's stored "
                             f"values ({stored.shape}): obfuscate right after LoadImage, before resizing, cropping "
                             "or reorienting")
        return np.transpose(self.scheme(stored), order).reshape(values.shape)

    def _integers(self, values: np.ndarray) -> np.ndarray:
        wanted = self.scheme.input_dtype
        if values.dtype.kind in "iu":
            return values
        if values.dtype.kind != "f":
            raise InputError(f"{self.scheme.name}: cannot obfuscate {values.dtype} images")
        info = np.iinfo(wanted)
        if values.size and (not np.all(np.isfinite(values)) or not np.array_equal(values, np.round(values))
                            or values.min() < info.min or values.max() > info.max):
            raise InputError(f"{self.scheme.name}: float input must hold whole numbers in [{info.min}, {info.max}] "
                             f"(the key maps {wanted} samples); got values in [{values.min()}, {values.max()}]")
        return values.astype(wanted)

    def __call__(self, image: Any) -> Any:
        """``image`` (a NumPy array or a MONAI MetaTensor) through the gate's check and screen, obfuscated."""
        values, tensor = _to_numpy(image)
        source = (getattr(tensor, "meta", None) or {}).get("filename_or_obj")
        colour_first = self.channel_first and self.scheme.params.get("channels", 1) == 3
        if source:
            codes = self._from_file(values, str(source))
        else:
            codes = self.scheme(np.ascontiguousarray(np.moveaxis(self._integers(values), -3, -1) if colour_first
                                                     else self._integers(values)))
            if colour_first:
                codes = np.moveaxis(codes, -1, -3)
        if values.dtype.kind == "f":
            codes = codes.astype(values.dtype)
        if tensor is None:
            return codes
        import torch

        out = torch.from_numpy(np.ascontiguousarray(codes)).to(tensor.device)
        if type(tensor) is not torch.Tensor and out.shape == tensor.shape:  # e.g. MetaTensor: keep its metadata
            kept = tensor.detach().clone().to(out.dtype)
            kept.copy_(out)
            return kept
        return out


class ObfuscateD:
    """:class:`Obfuscate` on the items ``keys`` of a dictionary (MONAI's dictionary transforms).

    Other items pass unchanged; a missing item is an error unless ``allow_missing_keys``.
    """

    def __init__(self, keys: Hashable | Sequence[Hashable], key: Key | Scheme, channel_first: bool = False,
                 allow_missing_keys: bool = False, burned_in_text: str = "refuse"):
        self.keys = [keys] if isinstance(keys, (str, int)) else list(cast(Sequence[Hashable], keys))
        self.transform = Obfuscate(key, channel_first, burned_in_text)
        self.allow_missing_keys = allow_missing_keys

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        """Return a copy of ``data`` with each of :attr:`keys` obfuscated (see :class:`Obfuscate`)."""
        out = dict(data)
        for name in self.keys:
            if name not in out:
                if self.allow_missing_keys:
                    continue
                raise InputError(f"ObfuscateD: no item {name!r} in the data (items: {', '.join(map(str, out))})")
            out[name] = self.transform(out[name])
        return out
