"""Third-party plugins: a package from tests/plugin, pip-installed, joins keygen, obfuscate, evaluate and the bench."""

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medveil.errors import ParameterError
from medveil.plugins import Parameter, PluginWarning, load_plugins, parse_assignments

PLUGIN = Path(__file__).parent / "plugin"
MEDVEIL = Path(sys.executable).with_name("medveil")


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory):
    target = tmp_path_factory.mktemp("site")
    source = tmp_path_factory.mktemp("build") / "plugin"
    shutil.copytree(PLUGIN, source)  # setuptools builds in the source folder: keep tests/ clean
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(target), str(source)], check=True, cwd=source,
                   env={**os.environ, "PIP_NO_CACHE_DIR": "1"})
    return target


def run(plugin_path, *args, cwd):
    env = {**os.environ, "PYTHONPATH": str(plugin_path)}
    return subprocess.run([str(MEDVEIL), *map(str, args)], capture_output=True, text=True, env=env, cwd=cwd)


def test_a_plugin_joins_keygen_obfuscate_attacks_evaluate_and_the_bench(plugin_path, tmp_path, rng):
    done = run(plugin_path, "keygen", "--scheme", "toy-shift", "-p", "offset=7", "-o", "toy.key", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    for label in ("no", "yes"):
        (tmp_path / "scans" / label).mkdir(parents=True)
        for i in range(8):
            Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(tmp_path / "scans" / label / f"{i}.png")
    done = run(plugin_path, "obfuscate", "--key", "toy.key", "--no-progress", "--burned-in-text", "off", "--keep-names", "scans", "obf",
               cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    original = np.asarray(Image.open(tmp_path / "scans" / "no" / "0.png"))
    assert np.array_equal(np.asarray(Image.open(tmp_path / "obf" / "no" / "0.png")), original + np.uint8(7))
    listed = json.loads(run(plugin_path, "attack", "list", "--json", cwd=tmp_path).stdout)
    assert {"toy-unshift": ["toy-shift"]}.items() <= {a["name"]: a["schemes"] for a in listed}.items()
    done = run(plugin_path, "evaluate", "utility", "--dataset", "scans", "--size", "16", "--scheme", "toy-shift",
               "--param", "offset=7", "--seeds", "1", "--epochs", "1", "--model", "toy-linear", "--no-progress",
               "-o", "utility", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "toy-shift offset=7" in done.stdout
    grid = subprocess.run([sys.executable, "-c", (
        "from medveil.bench.grid import Profile, cells_of; from medveil.schemes import Setting; "
        "p = Profile('t', 16, 1, 1, 1, (Setting('toy-shift', (('offset', 7),)),)); "
        "print(sorted(c.attack for c in cells_of(p) if c.kind == 'attack'))")],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(plugin_path)})
    assert "'toy-unshift'" in grid.stdout, grid.stderr


def test_a_broken_plugin_is_left_out_with_one_warning(monkeypatch):
    from medveil import plugins

    class Broken:
        name, value = "broken", "nowhere.module"

        def load(self):
            raise ImportError("No module named 'nowhere'")

    monkeypatch.setattr(plugins, "entry_points", lambda group: [Broken()])
    monkeypatch.setattr(plugins, "_loaded", set())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_plugins("medveil.schemes")
    assert [str(w.message) for w in caught if w.category is PluginWarning] == [
        "plugin 'broken' (nowhere.module) of medveil.schemes was not loaded: ImportError: No module named 'nowhere'"]


def test_declared_parameters_parse_by_type_and_refuse_strangers():
    declared = (Parameter("levels", int, None, ""), Parameter("signed", bool, False, ""))
    assert parse_assignments(["levels=50", "signed=yes"], declared, "intensity") == {"levels": 50, "signed": True}
    with pytest.raises(ParameterError, match="no parameter 'bits'"):
        parse_assignments(["bits=8"], declared, "intensity")
    with pytest.raises(ParameterError, match="must be a int"):
        parse_assignments(["levels=many"], declared, "intensity")


def test_a_plugin_format_is_read_and_written_by_obfuscate(plugin_path, tmp_path, rng):
    """A new format is one module (tests/plugin/medveil_toy/fmt.py) and one entry point."""
    assert run(plugin_path, "keygen", "--scheme", "toy-shift", "-p", "offset=7", "-o", "toy.key", cwd=tmp_path).returncode == 0
    (tmp_path / "scans").mkdir()
    image = rng.integers(0, 256, (12, 20), dtype=np.uint8)
    (tmp_path / "scans" / "a.toyimg").write_bytes(np.array(image.shape, "<u2").tobytes() + image.tobytes())
    done = run(plugin_path, "obfuscate", "--key", "toy.key", "--no-progress", "--burned-in-text", "off", "--keep-names",
               "scans", "obf", cwd=tmp_path)
    assert done.returncode == 0 and "1 obfuscated" in done.stdout, done.stderr
    written = (tmp_path / "obf" / "a.toyimg").read_bytes()
    assert np.array_equal(np.frombuffer(written[4:], np.uint8).reshape(12, 20), image + np.uint8(7))
    unplugged = subprocess.run([str(MEDVEIL), "inspect", str(tmp_path / "scans" / "a.toyimg")], capture_output=True, text=True)
    assert unplugged.returncode == 2 and "unsupported format '.toyimg'" in unplugged.stderr  # without the plugin
