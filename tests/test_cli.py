import json
import subprocess
import sys

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from medveil.cli import app

runner = CliRunner()


def medveil(*args):
    return runner.invoke(app, [str(a) for a in args])


def make_scans(root, rng, n=3):
    root.mkdir()
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8)).save(root / f"s{i}.png")
    return root


def test_keygen_obfuscate_compare(tmp_path, rng):
    scans = make_scans(tmp_path / "scans", rng)
    result = medveil("keygen", "--scheme", "intensity", "--levels", 50, "-o", tmp_path / "h.key")
    assert result.exit_code == 0 and "levels=50" in result.output
    result = medveil("obfuscate", "--key", tmp_path / "h.key", "--no-progress", scans, tmp_path / "obf")
    assert result.exit_code == 0, result.output
    assert "3 obfuscated" in result.output
    result = medveil("compare", scans, tmp_path / "obf", "--csv", tmp_path / "c.csv", "--figure", tmp_path / "f.png")
    assert result.exit_code == 0, result.output
    assert "mean over 3 images" in result.output
    assert (tmp_path / "f.png").stat().st_size > 1000
    ssims = [float(line.split(",")[1]) for line in (tmp_path / "c.csv").read_text().splitlines()[1:]]
    assert len(ssims) == 3 and max(ssims) < 0.3  # random-looking images: no structure survives
    scores = json.loads(medveil("compare", "--json", scans, tmp_path / "obf").output)  # one document
    assert sorted(r["ssim"] for r in scores["images"]) == sorted(ssims) and scores["mean"]["images"] == 3
    assert scores["structure_shows"] == [] and "structure shows" not in medveil("compare", scans, tmp_path / "obf").output
    same = medveil("compare", scans, scans)  # an image against itself: all of it shows
    assert same.output.count("<- structure shows") == 3 and "3 of 3 images at SSIM >= 0.3" in same.output


def one_line_error(result, code=2):
    assert result.exit_code == code, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    return lines


def test_bad_inputs_exit_nonzero_with_one_line(tmp_path, rng):
    scans = make_scans(tmp_path / "scans", rng)
    medveil("keygen", "-o", tmp_path / "h.key")
    doc = json.loads((tmp_path / "h.key").read_text())
    doc["params"]["levels"] = 10
    (tmp_path / "tampered.key").write_text(json.dumps(doc))
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.png").write_bytes(b"nope")
    cases = [
        (("obfuscate", "--key", tmp_path / "tampered.key", scans, tmp_path / "o1"), "fingerprint mismatch"),
        (("obfuscate", "--key", tmp_path / "nokey", scans, tmp_path / "o2"), "key file not found"),
        (("obfuscate", "--key", tmp_path / "h.key", tmp_path / "empty", tmp_path / "o3"), "holds no files"),
        (("obfuscate", "--key", tmp_path / "h.key", tmp_path / "bad.png", tmp_path / "o4.png"), "cannot read png"),
        (("keygen", "-o", tmp_path / "h.key"), "refusing to overwrite"),
        (("keygen", "--scheme", "intensity", "--bits", 20, "-o", tmp_path / "x.key"), "bits must be"),
        (("keygen", "--bits", 16, "-o", tmp_path / "x.key"), "--bits needs --scheme"),
    ]
    for args, message in cases:
        result = medveil(*args)
        lines = one_line_error(result)
        assert len(lines) == 1 and message in lines[0] and lines[0].startswith("error: "), (args, result.output)


def test_batch_with_bad_file_completes_others_and_fails(tmp_path, rng):
    scans = make_scans(tmp_path / "scans", rng)
    (scans / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    medveil("keygen", "-o", tmp_path / "h.key")
    result = medveil("obfuscate", "--key", tmp_path / "h.key", "--no-progress", scans, tmp_path / "obf")
    assert result.exit_code == 1
    assert "3 obfuscated" in result.output and "failed: " in result.output and "broken.png" in result.output
    names = sorted(p.name for p in (tmp_path / "obf").glob("*.png"))
    assert len(names) == 3 and not any(name.startswith("s") for name in names)  # keyed pseudonyms


def test_samples_and_inspect(tmp_path):
    result = medveil("samples", tmp_path / "s")
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "s" / "br35h").rglob("*.jpg"))) == 12
    result = medveil("inspect", tmp_path / "s" / "volumes" / "CT_small.dcm")
    assert result.exit_code == 0 and "--bits 16 --signed" in result.output
    info = json.loads(medveil("inspect", "--json", tmp_path / "s" / "volumes" / "CT_small.dcm").output)
    assert info["bits"] == 16 and info["dtype"] == "int16" and "--signed" in info["keygen"]


def test_obfuscating_a_png_loads_no_library_it_does_not_use(tmp_path, rng):
    # torch takes about a second to import, numba's kernel 1-1.5 s, pydicom and SciPy a few tenths, pydantic
    # (Typer 0.29 builds every option through it) 0.1 s: a keygen or an intensity run on a PNG pays for none
    scans = make_scans(tmp_path / "scans", rng, n=1)
    medveil("keygen", "--scheme", "intensity", "--levels", 50, "-o", tmp_path / "k.key")
    code = ("import sys; from medveil.cli import app; sys.argv = ['medveil', 'obfuscate', '--key', sys.argv[1], "
            "'--burned-in-text', 'off', sys.argv[2], sys.argv[3]]\n"
            "try:\n    app()\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'numba', 'pydicom', 'nibabel', 'scipy', 'distributed', 'tifffile', 'pydantic') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code, tmp_path / "k.key", scans / "s0.png", tmp_path / "o.png"],
                          capture_output=True, text=True, check=True)
    assert (tmp_path / "o.png").is_file() and done.stdout.strip().splitlines()[-1] == "[]", done.stdout


def test_paths_the_os_refuses_end_in_one_line(tmp_path, rng):
    scans = make_scans(tmp_path / "scans", rng)
    for args, path in ((["compare", scans, scans, "--csv", tmp_path / "missing" / "x.csv"], "missing/x.csv"),
                       (["token", "create", "--data", "/proc/medveil-x", "--tenant", "a"], "/proc/medveil-x")):
        result = medveil(*args)
        assert result.exit_code == 2, result.output
        assert path in result.output and "Traceback" not in result.output


def test_a_wrong_thing_where_a_file_or_folder_goes_is_one_line(tmp_path, rng):
    scans = make_scans(tmp_path / "scans", rng)
    assert medveil("keygen", "-o", tmp_path / "h.key").exit_code == 0
    cases = [(("key", "info", scans / "s0.png"), "s0.png: not a medveil key (binary"),
             (("key", "info", scans), "cannot read key"),
             (("inspect", scans), "scans: a folder; inspect looks at one image file"),
             (("compare", scans, tmp_path / "nosuch"), "nosuch: no such file or folder"),
             (("obfuscate", "-k", tmp_path / "h.key", tmp_path / "gone", tmp_path / "out"), "gone: no such file or folder"),
             (("obfuscate", "-k", tmp_path / "h.key", scans / "s0.png", tmp_path / "out.jpg"),
              "out.jpg: s0.png is written as .png (the codes must survive exactly); name the output out.png")]
    for args, message in cases:
        result = medveil(*args)
        assert result.exit_code == 2 and message in result.output, (args, result.output)
        assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert not (tmp_path / "out.jpg").exists() and not (tmp_path / "out").exists()


def test_a_mixed_folder_says_which_key_the_others_need_and_filters_split_it(tmp_path, rng, dicom_dir):
    import shutil

    scans = make_scans(tmp_path / "scans", rng)
    shutil.copy(dicom_dir / "CT_small.dcm", scans / "ct.dcm")
    assert medveil("keygen", "-o", tmp_path / "h.key").exit_code == 0
    mixed = medveil("obfuscate", "-k", tmp_path / "h.key", "--no-progress", "--burned-in-text", "off", scans,
                    tmp_path / "out")
    assert mixed.exit_code == 1 and "3 obfuscated" in mixed.output
    assert ("1 file(s) need another key: medveil keygen --scheme intensity --bits 16 --signed -o KEY, then run them "
            "with it (--include '*.dcm')") in mixed.output
    assert medveil("keygen", "--scheme", "intensity", "--bits", 16, "--signed", "-o", tmp_path / "ct.key").exit_code == 0
    ct = medveil("obfuscate", "-k", tmp_path / "ct.key", "--no-progress", "--include", "*.dcm", scans, tmp_path / "ct")
    assert ct.exit_code == 0 and "1 obfuscated" in ct.output and "3 left out by --include/--exclude" in ct.output
    png = medveil("obfuscate", "-k", tmp_path / "h.key", "--no-progress", "--burned-in-text", "off",
                  "--exclude", "*.dcm", scans, tmp_path / "png")
    assert png.exit_code == 0 and "3 obfuscated" in png.output
    none = medveil("obfuscate", "-k", tmp_path / "h.key", "--include", "*.nii", scans, tmp_path / "none")
    assert none.exit_code == 2 and "leave none of its 4 files" in none.output


def test_help_writes_placeholders_as_click_does():
    usage = runner.invoke(app, ["obfuscate", "--help"], env={"COLUMNS": "120"}, terminal_width=120).output
    assert "obfuscate [OPTIONS] SOURCE OUTPUT" in usage, usage
    assert "TEXT" in usage and "PATH" in usage
    assert not [mark for mark in ("{source}", "<str>", "<path>") if mark in usage]
