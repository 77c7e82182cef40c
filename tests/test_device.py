"""--device: auto picks the CPU here with today's results; cuda where there is none is one line."""

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from medveil.nn import device as devices
from medveil.errors import InputError
from medveil.training.loop import TrainConfig, fit

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")


@pytest.fixture(autouse=True)
def restore_default():
    yield
    devices.set_default_device("auto")


def train_tiny(device):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 1))
    x = torch.rand(32, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    data = TensorDataset(x, (x.mean((1, 2, 3)) > 0.5).float()[:, None])
    fit(model, data, data, torch.nn.BCEWithLogitsLoss(), TrainConfig(epochs=2, batch_size=8, progress=False, device=device))
    return model


def test_auto_without_cuda_is_the_cpu_with_the_cpu_s_results():
    if torch.cuda.is_available():
        assert devices.resolve_device("auto").type == "cuda"
        return
    assert devices.resolve_device("auto") == devices.resolve_device() == torch.device("cpu")
    auto, cpu = train_tiny("auto"), train_tiny("cpu")
    for a, b in zip(auto.state_dict().values(), cpu.state_dict().values()):
        assert torch.equal(a, b)
    assert next(auto.parameters()).device.type == "cpu"  # models come back to the CPU


@no_cuda
def test_cuda_where_there_is_none_is_a_one_line_error(tmp_path):
    from typer.testing import CliRunner

    from medveil.cli import app

    with pytest.raises(InputError, match="no CUDA device"):
        devices.resolve_device("cuda")
    result = CliRunner().invoke(app, ["evaluate", "utility", "-o", str(tmp_path / "u"), "--device", "cuda"])
    assert result.exit_code == 2 and "no CUDA device" in result.output
    assert not (tmp_path / "u").exists()  # refused before any work


def test_unknown_device_names_are_refused():
    for name in ("tpu", "cpu:1", "cuda:x", ""):
        with pytest.raises(InputError, match="unknown device"):
            devices.set_default_device(name)
    devices.set_default_device("cuda:1")  # a name, checked for existence only when used


@no_cuda
def test_keys_obfuscate_on_the_cpu_whatever_the_device(tmp_path, rng):
    from medveil.nn import UNet
    from medveil.schemes import from_key
    from medveil.schemes.adversarial import create_adversarial_key

    torch.manual_seed(0)
    key = create_adversarial_key(UNet(1, 1, 4, 1), tmp_path / "adv.key", 16, lam=1.0)
    images = rng.integers(0, 256, (3, 16, 16), dtype=np.uint8)
    expected = from_key(key)(images)
    devices.set_default_device("cuda")  # would fail if a scheme asked for the default device
    assert np.array_equal(from_key(key)(images), expected)
