"""Medical image I/O.

One reader and writer over DICOM, NIfTI, PNG/JPEG/TIFF and NumPy, the gate every way out of the hospital passes
(:mod:`medveil.io.gate`), and safe folder runs through it.
"""

# Importing the format modules registers them.
from medveil.io import dicom, nifti, npy, raster  # noqa: F401
from medveil.io.batch import BatchReport, gate_tree, obfuscate_tree
from medveil.io.gate import Gate, obfuscate_file, obfuscate_image
from medveil.io.image import MedicalImage, format_of, is_supported, output_name, read_image, write_image

__all__ = [
    "BatchReport",
    "Gate",
    "MedicalImage",
    "format_of",
    "is_supported",
    "obfuscate_file",
    "obfuscate_image",
    "gate_tree",
    "obfuscate_tree",
    "output_name",
    "read_image",
    "write_image",
]
