import importlib.util
from pathlib import Path

import numpy as np
import pytest

import medveil


def package_dir(name: str) -> Path:
    """Where an installed package's files lie (its bundled data), without importing it."""
    return Path(importlib.util.find_spec(name).submodule_search_locations[0])


@pytest.fixture(scope="session")
def dicom_dir() -> Path:
    # Read bundled files by path: pydicom's get_testdata_file would try to download missing ones.
    return package_dir("pydicom") / "data" / "test_files"


@pytest.fixture
def key8():
    return medveil.generate_key("intensity", levels=50)


@pytest.fixture
def rng():
    return np.random.default_rng(0)  # test data only; never key material
