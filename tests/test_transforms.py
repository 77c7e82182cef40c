"""medveil inside torch and MONAI pipelines: the transforms and the obfuscated-folder dataset."""

import numpy as np
import pytest
import torch
from PIL import Image

import medveil
from medveil.errors import InputError
from medveil.transforms import Obfuscate, ObfuscateD


@pytest.fixture
def key():
    return medveil.generate_key("intensity", levels=50)


def test_obfuscate_gives_back_the_type_it_was_given(key, rng):
    image = rng.integers(0, 256, (16, 16), dtype=np.uint8)
    expected = medveil.from_key(key)(image)
    transform = Obfuscate(key)
    assert np.array_equal(transform(image), expected)
    as_tensor = transform(torch.from_numpy(image))
    assert isinstance(as_tensor, torch.Tensor) and np.array_equal(as_tensor.numpy(), expected)
    as_float = transform(torch.from_numpy(image).float())
    assert as_float.dtype == torch.float32 and np.array_equal(as_float.numpy(), expected)
    with pytest.raises(InputError, match="whole numbers"):
        transform(image.astype(np.float32) + 0.5)
    with pytest.raises(InputError, match="whole numbers"):
        transform(np.full((4, 4), 300.0))
    with pytest.raises(InputError, match="16-bit"):
        transform(image.astype(np.uint16))


def test_colour_keys_take_channel_first_images(rng):
    key = medveil.generate_key("skk", channels=3)
    image = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    first = Obfuscate(key, channel_first=True)(np.moveaxis(image, -1, 0))
    assert np.array_equal(np.moveaxis(first, 0, -1), medveil.from_key(key)(image))


def test_obfuscate_d_in_a_real_monai_pipeline(tmp_path, key, rng):
    monai = pytest.importorskip("monai")
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged

    image = rng.integers(0, 256, (24, 24), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "scan.png")
    pipeline = Compose([LoadImaged(keys="image"), EnsureChannelFirstd(keys="image"),
                        ObfuscateD(keys="image", key=key)])
    item = pipeline({"image": str(tmp_path / "scan.png"), "label": 1})
    loaded = LoadImaged(keys="image")({"image": str(tmp_path / "scan.png")})["image"].numpy().astype(np.uint8)
    out = item["image"]
    assert isinstance(out, monai.data.MetaTensor) and out.meta["filename_or_obj"].endswith("scan.png")
    assert np.array_equal(out.numpy()[0].astype(np.uint8), medveil.from_key(key)(loaded)) and item["label"] == 1
    with pytest.raises(InputError, match="no item 'mask'"):
        ObfuscateD(keys="mask", key=key)({"image": image})


def test_obfuscated_folder_feeds_a_data_loader_with_workers(tmp_path, key, rng):
    from torch.utils.data import DataLoader

    from medveil.data import ObfuscatedFolder

    images = rng.integers(0, 256, (6, 16, 16), dtype=np.uint8)
    for i, image in enumerate(images):
        folder = tmp_path / ("tumour" if i % 2 else "healthy")
        folder.mkdir(exist_ok=True)
        Image.fromarray(image).save(folder / f"{i}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    dataset = ObfuscatedFolder(tmp_path, key)
    assert len(dataset) == 6 and dataset.classes == ["healthy", "tumour"]
    batches = list(DataLoader(dataset, batch_size=3, num_workers=2))
    codes = torch.cat([b["image"] for b in batches]).numpy()
    labels = torch.cat([b["label"] for b in batches]).numpy()
    order = [int(f.stem) for f in dataset.files]
    assert codes.shape == (6, 1, 16, 16)  # channel first, as MONAI's dictionary transforms expect
    assert np.array_equal(codes[:, 0], medveil.from_key(key)(images[order]))
    assert list(labels) == [i % 2 for i in order]
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no image"):
        ObfuscatedFolder(tmp_path / "empty", key)


def test_obfuscated_folder_resizes_before_obfuscating_and_says_so_on_mixed_sizes(tmp_path, key, rng):
    from medveil.data import ObfuscatedFolder

    big = rng.integers(0, 256, (32, 32), dtype=np.uint8)
    small = rng.integers(0, 256, (16, 16), dtype=np.uint8)
    for name, image in (("a", big), ("b", small)):
        (tmp_path / "scans" / name).mkdir(parents=True)
        Image.fromarray(image).save(tmp_path / "scans" / name / "0.png")
    mixed = ObfuscatedFolder(tmp_path / "scans", key)
    with pytest.raises(InputError, match="images of different sizes in one batch .*pre_transform"):
        next(iter(mixed.loader(batch_size=2)))

    halve = lambda plain: plain[:, ::2, ::2] if plain.shape[-1] == 32 else plain  # nearest-neighbour to 16x16
    batch = next(iter(ObfuscatedFolder(tmp_path / "scans", key, pre_transform=halve).loader(batch_size=2)))
    scheme = medveil.from_key(key)
    assert np.array_equal(batch["image"][0, 0].numpy(), scheme(big[::2, ::2]))  # codes of the resized plain image
    assert np.array_equal(batch["image"][1, 0].numpy(), scheme(small))
    blur = ObfuscatedFolder(tmp_path / "scans", key, pre_transform=lambda plain: plain / 2)
    with pytest.raises(InputError, match="non-integer values"):
        blur[0]
    flipped = ObfuscatedFolder(tmp_path / "scans", key, transform=lambda item: {**item, "image": item["image"].flip(-1)})
    assert np.array_equal(flipped[1]["image"][0].numpy(), scheme(small)[:, ::-1])  # dict transforms after


def test_monai_loaded_ct_gives_the_clis_codes(tmp_path):
    """LoadImaged gives CT_small in HU with its axes reversed; the codes must still be the CLI's."""
    pytest.importorskip("monai")
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, Resized
    from pydicom.data import get_testdata_file
    from typer.testing import CliRunner

    from medveil.cli import app
    from medveil.io import read_image

    ct = get_testdata_file("CT_small.dcm")
    key = medveil.generate_key("intensity", bits=16, signed=True, levels=300)
    key.save(tmp_path / "ct.key")
    done = CliRunner().invoke(app, ["obfuscate", "-k", str(tmp_path / "ct.key"), ct, str(tmp_path / "ct.dcm")])
    assert done.exit_code == 0, done.output
    cli = read_image(tmp_path / "ct.dcm").pixels
    loading = Compose([LoadImaged(keys="image"), EnsureChannelFirstd(keys="image")])
    loaded = loading({"image": ct})["image"]
    assert loaded.numpy().min() < 0  # HU, not the stored values: mapping these would give other codes
    out = ObfuscateD("image", key)(loading({"image": ct}))["image"]
    assert out.shape == loaded.shape and np.array_equal(out.numpy()[0].T, cli)

    # the CLI's bit-depth check: an 8-bit PNG is not mapped with a 16-bit key, although MONAI's floats fit it
    Image.fromarray(np.arange(32 * 32, dtype=np.uint8).reshape(32, 32) // 4).save(tmp_path / "eight.png")
    with pytest.raises(InputError, match="8-bit data"):
        ObfuscateD("image", key)(loading({"image": str(tmp_path / "eight.png")}))
    # an image resized after loading cannot be placed on its file's stored values
    resized = Resized("image", (64, 64))(loading({"image": ct}))
    with pytest.raises(InputError, match="cannot place"):
        ObfuscateD("image", key)(resized)
