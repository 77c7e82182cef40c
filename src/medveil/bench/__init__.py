"""The privacy-utility benchmark over every scheme: a cached grid of utility runs and attacks, and its report."""

from medveil.bench.grid import PROFILES, Cell, Profile, cells_of, run_grid
from medveil.bench.report import write_report

__all__ = ["PROFILES", "Cell", "Profile", "cells_of", "run_grid", "write_report"]
