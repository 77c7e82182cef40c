import json
import os
import stat

import numpy as np
import pytest

import medveil
from medveil.errors import KeyFileError, ParameterError, SchemeMismatchError
from medveil.keys import Key, KeyStream


def test_saved_key_is_private_and_round_trips(tmp_path, key8):
    path = key8.save(tmp_path / "k.key")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    loaded = Key.load(path)
    assert loaded == key8
    assert loaded.fingerprint == key8.fingerprint
    assert [p.name for p in tmp_path.iterdir()] == ["k.key"]  # no temporary left behind


def test_existing_key_is_never_overwritten(tmp_path, key8):
    path = key8.save(tmp_path / "k.key")
    before = path.read_text()
    with pytest.raises(KeyFileError, match="already exists"):
        medveil.generate_key("intensity").save(path)
    assert path.read_text() == before


def test_secret_is_not_in_repr(key8):
    assert key8.secret.hex() not in repr(key8)
    assert "secret" not in repr(key8)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d["params"].update(levels=51), "fingerprint mismatch"),
        (lambda d: d.update(secret=d["secret"][:-4] + "AAA="), "fingerprint mismatch"),
        (lambda d: d.update(medveil_key_version=99), "version 99 is not supported"),
        (lambda d: d.pop("secret"), "malformed"),
    ],
)
def test_altered_key_files_are_refused(tmp_path, key8, edit, message):
    doc = json.loads(key8.to_json())
    edit(doc)
    path = tmp_path / "k.key"
    path.write_text(json.dumps(doc))
    with pytest.raises(KeyFileError, match=message):
        Key.load(path)


def test_garbage_and_missing_key_files(tmp_path):
    (tmp_path / "bad.key").write_text("not json")
    with pytest.raises(KeyFileError, match="not a medveil key"):
        Key.load(tmp_path / "bad.key")
    with pytest.raises(KeyFileError, match="not found"):
        Key.load(tmp_path / "missing.key")


def test_key_for_another_scheme_is_an_error(tmp_path, key8):
    key8.save(tmp_path / "k.key")
    with pytest.raises(SchemeMismatchError, match="'intensity' scheme, not 'tanaka'"):
        Key.load(tmp_path / "k.key", scheme="tanaka")


def test_unknown_scheme_and_parameters_are_errors():
    with pytest.raises(ParameterError, match="unknown scheme"):
        medveil.generate_key("rot13")
    with pytest.raises(ParameterError, match="takes no parameter block"):
        medveil.generate_key("intensity", block=4)
    with pytest.raises(ParameterError, match="levels must be"):
        medveil.generate_key("intensity", levels=257)


def test_stream_is_deterministic_and_label_separated():
    secret = bytes(range(32))
    assert KeyStream(secret, "a").read(100) == KeyStream(secret, "a").read(100)
    assert KeyStream(secret, "a").read(64) != KeyStream(secret, "b").read(64)
    s = KeyStream(secret, "a")
    assert s.read(10) + s.read(90) == KeyStream(secret, "a").read(100)


def test_permutation_is_a_permutation_and_key_dependent():
    p1 = KeyStream(b"\x01" * 32, "p").permutation(4096)
    p2 = KeyStream(b"\x02" * 32, "p").permutation(4096)
    assert sorted(p1.tolist()) == list(range(4096))
    assert not np.array_equal(p1, p2)


def test_below_is_in_range_and_roughly_uniform():
    draws = KeyStream(b"\x03" * 32, "u").below(np.full(60000, 6))
    assert draws.min() == 0 and draws.max() == 5
    counts = np.bincount(draws, minlength=6)
    # chi-square with 5 dof: 99.9th percentile is 20.5
    chi2 = ((counts - 10000) ** 2 / 10000).sum()
    assert chi2 < 20.5


def test_a_key_file_others_can_read_loads_with_a_warning(tmp_path):
    import subprocess
    import sys

    from medveil.keys import KeyPermissionWarning

    path = medveil.generate_key("intensity", levels=50).save(tmp_path / "k.key")
    os.chmod(path, 0o644)
    with pytest.warns(KeyPermissionWarning, match="chmod 600"):
        Key.load(path)
    np.save(tmp_path / "a.npy", np.zeros((8, 8), np.uint8))
    result = subprocess.run([sys.executable, "-m", "medveil.cli", "obfuscate", "--key", str(path), "--burned-in-text",
                             "off", str(tmp_path / "a.npy"), str(tmp_path / "b.npy")], capture_output=True, text=True)
    assert result.returncode == 0
    assert result.stderr.strip().splitlines() == [f"warning: {path}: key file is readable by others (mode 0644); chmod 600 {path}"]


def test_a_key_encrypted_at_rest_needs_its_passphrase(tmp_path, key8, monkeypatch):
    from medveil.errors import KeyEncryptedError

    monkeypatch.delenv("MEDVEIL_KEY_PASSPHRASE", raising=False)
    path = key8.save(tmp_path / "k.key", passphrase="correct horse")
    text = path.read_text()
    assert key8.secret.hex() not in text and base64_of(key8.secret) not in text
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert Key.load(path, passphrase="correct horse") == key8
    with pytest.raises(KeyEncryptedError, match="encrypted"):
        Key.load(path)
    with pytest.raises(KeyFileError, match="wrong passphrase"):
        Key.load(path, passphrase="battery staple")
    monkeypatch.setenv("MEDVEIL_KEY_PASSPHRASE", "correct horse")
    assert Key.load(path) == key8
    doc = json.loads(text)
    doc["params"]["levels"] = 7  # the parameters are bound to the sealed secret
    path.write_text(json.dumps(doc))
    with pytest.raises(KeyFileError, match="wrong passphrase|altered"):
        Key.load(path)


def base64_of(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode()


def test_key_commands_encrypt_decrypt_show_and_rotate(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from medveil.cli import app

    runner = CliRunner()
    path = tmp_path / "k.key"
    monkeypatch.setenv("MEDVEIL_KEY_PASSPHRASE", "pw")
    assert runner.invoke(app, ["keygen", "--scheme", "skk", "--allow-broken", "--passphrase", "-o", str(path)]).exit_code == 0
    info = json.loads(runner.invoke(app, ["key", "info", "--json", str(path)]).output)
    assert info["encrypted"] and info["scheme"] == "skk" and info["fingerprint"] == Key.load(path).fingerprint
    assert runner.invoke(app, ["key", "decrypt", str(path)]).exit_code == 0
    monkeypatch.delenv("MEDVEIL_KEY_PASSPHRASE")
    original = Key.load(path)  # plain again: no passphrase needed
    monkeypatch.setenv("MEDVEIL_KEY_PASSPHRASE", "other")
    assert runner.invoke(app, ["key", "encrypt", str(path)]).exit_code == 0
    wrong = runner.invoke(app, ["key", "decrypt", str(path)], env={"MEDVEIL_KEY_PASSPHRASE": "nope"})
    assert wrong.exit_code == 2 and "wrong passphrase" in wrong.output and len(wrong.output.splitlines()) == 1
    rotated = runner.invoke(app, ["key", "rotate", str(path), "-o", str(tmp_path / "new.key")])
    assert rotated.exit_code == 0 and "retrain" in rotated.output
    new = Key.load(tmp_path / "new.key", passphrase="unused")  # stored unencrypted
    assert (new.scheme, dict(new.params)) == (original.scheme, dict(original.params)) and new.secret != original.secret
    assert runner.invoke(app, ["--version"]).output.strip() == f"medveil {medveil.__version__}"


def test_derived_secrets_make_the_same_key_again_and_differ_per_label():
    from medveil.keys import derive_secret
    from medveil.schemes import Setting

    master = bytes(range(32))
    setting = Setting("intensity", (("levels", 50),))
    first = setting.new_key(secret=derive_secret(master, "cell-a"))
    assert first.fingerprint == setting.new_key(secret=derive_secret(master, "cell-a")).fingerprint
    assert first.fingerprint != setting.new_key(secret=derive_secret(master, "cell-b")).fingerprint
    assert first.fingerprint != setting.new_key(secret=derive_secret(bytes(32), "cell-a")).fingerprint
    assert setting.new_key().fingerprint != setting.new_key().fingerprint  # without a secret: fresh each time
