"""Real medical images that ship inside installed packages (see ``shared/DATA.md``)."""

from medveil.data.samples import copy_samples, package_path

__all__ = ["copy_samples", "package_path"]
