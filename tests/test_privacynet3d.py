"""Privacy-Net on volumes: networks, patches and sliding windows, the 3-D simulation, NIfTI, the encoder as a scheme."""

import csv

import nibabel as nib
import numpy as np
import pytest
import torch
from scipy import ndimage

import medveil
from medveil import metrics
from medveil.data.segmentation import SegmentationData, subject_pairs
from medveil.data.volumes import (CLASS_NAMES_3D, THREE_CLASSES, load_nifti_folder, lower_resolution, merge_classes,
                                  rician_noise, save_nifti_folder, simulate_volumes)
from medveil.nn import GeneralisedDiceLoss, UNet
from medveil.nn.patches import RandomPatches, crop, random_corner, sliding_window, window_starts
from medveil.privacynet.train import PrivacyNet, PrivacyNetConfig, segment
from medveil.schemes.adversarial import create_adversarial_key


@pytest.fixture(scope="module")
def volumes():
    return simulate_volumes(subjects=7, scans=2, size=40, seed=0)


def test_every_network_keeps_its_shapes_in_3d():
    net = PrivacyNet(classes=6, width=2, depth=2, dims=3).eval()
    x = torch.rand(2, 1, 16, 24, 32)
    assert net.encoder(x).shape == (2, 1, 16, 24, 32)
    assert net.segmenter(x).shape == (2, 6, 16, 24, 32)
    assert net.discriminator.embed(x).shape == (2, 64)
    assert net.discriminator(torch.cat([x, x], dim=1)).shape == (2,)
    with pytest.raises(ValueError, match="dims must be 2 or 3"):
        UNet(dims=4)


def test_generalised_dice_loss_on_volumes_and_with_cross_entropy():
    target = torch.randint(0, 3, (2, 4, 4, 4))
    perfect = torch.nn.functional.one_hot(target, 3).movedim(-1, 1).float() * 50
    assert float(GeneralisedDiceLoss()(perfect, target)) == pytest.approx(0, abs=1e-4)
    wrong = torch.roll(perfect, 1, dims=1)
    assert float(GeneralisedDiceLoss(cross_entropy=1.0)(wrong, target)) > float(GeneralisedDiceLoss()(wrong, target)) + 10


def test_window_starts_tile_the_axis_on_the_pooling_grid():
    assert window_starts(48, 32, 8, 4) == [0, 16]
    assert window_starts(100, 32, 8, 4) == [0, 16, 32, 48, 64, 68]
    assert window_starts(20, 32, 8) == [0]
    for length in (33, 64, 97):
        starts = window_starts(length, 16, 4)
        covered = np.zeros(length, bool)
        for s in starts:
            covered[s if s == 0 else s + 4: s + 16 if s + 16 == length else s + 12] = True
        assert covered.all()


@pytest.mark.parametrize("shape", [(40, 48, 56), (24, 40, 30)])
def test_sliding_window_reproduces_a_whole_volume_pass_where_the_receptive_field_allows(shape):
    torch.manual_seed(0)
    unet = UNet(1, 3, width=2, depth=1, dims=3).eval()  # receptive radius 2 + 2*2 + 2 = 8 voxels
    x = torch.rand(2, 1, *shape)
    with torch.no_grad():
        whole = unet(x)
        stitched = sliding_window(unet, x, patch=24, margin=8, align=2)
    assert stitched.shape == whole.shape
    torch.testing.assert_close(stitched, whole, atol=1e-5, rtol=1e-5)
    with torch.no_grad():  # a margin smaller than the receptive field does not reproduce it: the test can fail
        assert not torch.allclose(sliding_window(unet, x, patch=24, margin=1, align=2), whole, atol=1e-5)


def test_random_patches_crop_a_batch_of_inputs_and_targets_at_one_corner():
    from medveil.attacks.reidentify import PairTensors
    from medveil.data.pipeline import ImagePairs

    volumes = (np.arange(2 * 10 * 12 * 14) % 251).astype(np.uint8).reshape(2, 10, 12, 14)
    patches = RandomPatches(ImagePairs(volumes, volumes, volumes=True), patch=6, dims=3, fixed=True, seed=3)
    x, y = patches.take(torch.tensor([0, 1]))
    assert x.shape == y.shape == (2, 1, 6, 6, 6) and torch.equal(x, y)
    assert torch.equal(patches.take(torch.tensor([0, 1]))[0], x)  # fixed: the same patches every epoch
    assert torch.equal(patches[0][0], patches.take(torch.tensor([0]))[0][0])
    fresh = RandomPatches(ImagePairs(volumes, volumes, volumes=True), patch=6, dims=3)
    torch.manual_seed(0)
    assert len({fresh.take(torch.tensor([0]))[0].sum().item() for _ in range(8)}) > 1  # a fresh corner each time
    pairs = RandomPatches(PairTensors(volumes, np.array([[0, 1, 0], [1, 1, 1]])), patch=6, dims=3, fixed=True)
    x, same = pairs.take(torch.tensor([0, 1]))
    assert x.shape == (2, 2, 6, 6, 6) and same.tolist() == [0.0, 1.0]  # a pair's label passes through
    corner = random_corner((10, 12, 14), 6, torch.Generator().manual_seed(0))
    assert all(0 <= c <= n - 6 for c, n in zip(corner, (10, 12, 14)))
    image = torch.from_numpy(volumes[:1].astype(np.float32))
    assert torch.equal(crop(image, corner, 6)[0, 0, 0, 0], image[0, corner[0], corner[1], corner[2]])


def test_the_training_loop_gathers_pairs_a_batch_at_a_time_as_the_per_item_loader_gave_them(monkeypatch):
    from torch.utils.data import DataLoader

    from medveil.attacks.reidentify import PairTensors
    from medveil.training.loop import batches

    images = np.random.default_rng(0).integers(0, 256, (6, 8, 8), dtype=np.uint8)
    pairs = PairTensors(images, np.array([[i, (i + 1) % 6, i % 2] for i in range(6)]))
    loader = list(DataLoader(pairs, batch_size=4))
    monkeypatch.setattr(PairTensors, "__getitem__", lambda *_: pytest.fail("an item at a time"))
    ours = list(batches(pairs, 4, torch.device("cpu")))
    assert [len(x) for x, _ in ours] == [len(x) for x, _ in loader] == [4, 2]
    for (x, y), (lx, ly) in zip(ours, loader):
        assert torch.equal(x, lx) and torch.equal(y, ly)
    shuffled = list(batches(pairs, 4, torch.device("cpu"), torch.Generator().manual_seed(5)))

    def sums(batches_):
        return sorted(torch.cat([x for x, _ in batches_]).sum((1, 2, 3)).tolist())

    assert sums(shuffled) == sums(ours)  # shuffled: each pair once


def test_ms_ssim_on_volumes_by_known_pairs():
    rng = np.random.default_rng(0)
    smooth = np.stack([np.full((40, 40, 40), v, np.uint8) for v in (60, 61)])
    smooth[:, 10:30, 10:30, 10:30] += 100
    noisy = np.clip(smooth + rng.normal(0, 25, smooth.shape), 0, 255).astype(np.uint8)
    same = metrics.ms_ssim(smooth, smooth, volumes=True)
    assert same == pytest.approx([1.0, 1.0])
    assert (metrics.ms_ssim(smooth, noisy, volumes=True) < 0.9).all()
    with pytest.raises(medveil.InputError, match="at least 33 pixels a side"):
        metrics.ms_ssim(smooth[:, :20], smooth[:, :20], volumes=True)


def test_simulated_volumes_carry_five_tissues_ids_and_switchable_identity():
    both = simulate_volumes(subjects=3, scans=2, size=40, seed=1)
    assert both.images.shape == (6, 40, 40, 40) and both.dims == 3 and both.class_names == CLASS_NAMES_3D
    assert set(np.unique(both.masks)) == set(range(6))
    assert list(both.subjects) == [0, 0, 1, 1, 2, 2]

    def identity_ratios(identity):
        """Between-subject over within-subject differences of the label maps and of the scalp's brightness."""
        data = simulate_volumes(subjects=8, scans=2, size=32, identity=identity, seed=1)

        def shell(k):  # mean intensity within 3 voxels outside the brain
            distance = ndimage.distance_transform_edt(data.masks[k] == 0)
            return data.images[k][(distance > 0) & (distance <= 3)].astype(float).mean()

        firsts, seconds = range(0, 16, 2), range(1, 16, 2)
        labels_within = np.mean([(data.masks[i] != data.masks[j]).mean() for i, j in zip(firsts, seconds)])
        labels_between = np.mean([(data.masks[i] != data.masks[j]).mean() for i, j in zip(firsts[:-1], firsts[1:])])
        scalp = np.array([shell(k) for k in range(16)])
        scalp_within = np.abs(scalp[0::2] - scalp[1::2]).mean()
        scalp_between = np.abs(scalp[0:-2:2] - scalp[2::2]).mean()
        return labels_between / labels_within, scalp_between / scalp_within

    anatomy_labels, anatomy_scalp = identity_ratios(("anatomy",))
    head_labels, head_scalp = identity_ratios(("extracerebral",))
    assert anatomy_labels > 1.5 * head_labels  # the labels identify a subject only through anatomy
    assert head_scalp > 10 and anatomy_scalp < 3  # the scalp identifies a subject only through its own features
    with pytest.raises(medveil.InputError, match="unknown identity source"):
        simulate_volumes(subjects=2, scans=2, size=32, identity=("face",))


def test_volumes_round_trip_through_nifti_with_their_affine(tmp_path, volumes):
    save_nifti_folder(volumes, tmp_path / "set", spacing=4.2)
    loaded, affines = load_nifti_folder(tmp_path / "set")
    assert np.array_equal(loaded.images, volumes.images) and np.array_equal(loaded.masks, volumes.masks)
    assert np.array_equal(loaded.subjects, volumes.subjects) and loaded.class_names == volumes.class_names
    assert np.allclose(affines[0], np.diag([4.2, 4.2, 4.2, 1]))
    nib.Nifti1Image(volumes.masks[0], np.eye(4)).to_filename(tmp_path / "set" / "labels" / "0000.nii.gz")
    assert np.allclose(load_nifti_folder(tmp_path / "set")[1][0], np.diag([4.2, 4.2, 4.2, 1]))  # the image's affine
    (tmp_path / "set" / "images" / "0001.nii.gz").write_bytes(b"junk")
    with pytest.raises(medveil.InputError, match=r"0001.nii.gz: not a readable NIfTI"):
        load_nifti_folder(tmp_path / "set")
    with pytest.raises(medveil.InputError, match="no subjects.csv"):
        load_nifti_folder(tmp_path)


def test_segment_runs_volumes_by_sliding_windows(volumes):
    torch.manual_seed(0)
    segmenter = UNet(1, 6, width=2, depth=2, dims=3)
    labels = segment(segmenter, volumes.images[:2], patch=16)
    assert labels.shape == (2, 40, 40, 40) and labels.dtype == np.uint8 and labels.max() < 6


def test_3d_encoder_as_a_scheme_obfuscates_nifti_volumes_and_keeps_the_affine(tmp_path, volumes):
    from typer.testing import CliRunner

    from medveil.cli import app

    torch.manual_seed(0)
    key = create_adversarial_key(UNet(1, 1, 2, 2, dims=3), tmp_path / "vol.key", size=16, lam=1)
    assert key.params["dims"] == 3 and key.params["patch"] == 16
    scheme = medveil.from_key(key)
    first = scheme(volumes.images[:2])
    assert first.shape == volumes.images[:2].shape and first.dtype == np.uint8
    assert np.array_equal(first, medveil.from_key(medveil.Key.load(tmp_path / "vol.key"))(volumes.images[:2]))
    assert np.array_equal(scheme(volumes.images[0]), first[0])  # one volume alone, as a NIfTI file holds it
    with pytest.raises(medveil.InputError, match="8-bit volumes"):
        scheme(volumes.images.astype(np.int16))

    affine = np.array([[0, -2.0, 0, 10], [2.0, 0, 0, -5], [0, 0, 3.0, 7], [0, 0, 0, 1]])
    (tmp_path / "in").mkdir()
    nib.Nifti1Image(volumes.images[0], affine).to_filename(tmp_path / "in" / "head.nii.gz")
    # OCR reads letters into the simulation's noise (a false positive noted on the volumes issue); no text here
    result = CliRunner().invoke(app, ["obfuscate", "--keep-names", str(tmp_path / "in"), str(tmp_path / "out"), "--key",
                                      str(tmp_path / "vol.key"), "--burned-in-text", "off"])
    assert result.exit_code == 0, result.output
    out = nib.load(tmp_path / "out" / "head.nii.gz")
    assert np.allclose(out.affine, affine) and np.array_equal(np.asarray(out.dataobj), first[0])


def test_evaluation_runs_on_volumes_end_to_end(tmp_path, volumes):
    from medveil.privacynet.evaluate import columns, evaluate_privacynet

    data = SegmentationData(volumes.images, volumes.masks, volumes.subjects, "tiny-volumes", volumes.class_names)
    site = SegmentationData(volumes.images[::-1].copy(), merge_classes(volumes.masks[::-1], volumes.class_names),
                            volumes.subjects, "other-site", THREE_CLASSES)
    config = PrivacyNetConfig(epochs=1, pretrain_epochs=1, width=2, depth=2, patch=16, progress=False)
    rows = evaluate_privacynet(data, [0.0], 1, tmp_path / "out", tmp_path / "keys", config, attack_epochs=1,
                               transfer=site)
    with open(tmp_path / "out" / "results.csv") as fh:
        table = list(csv.DictReader(fh))
    assert list(table[0]) == columns(data) and "dice_nuclei" in table[0] and [r["lambda"] for r in table] == ["plain", "0"]
    assert all(0 <= r["dice_overall"] <= 1 and 0 <= r["reid_msssim_acc"] <= 1 for r in rows)
    with open(tmp_path / "out" / "attacks.csv") as fh:
        assert [a["attacker_data"] for a in csv.DictReader(fh)] == ["prior", "public"]  # public: the other site
    report = (tmp_path / "out" / "report.md").read_text()
    assert "16³ patches" in report and "| λ | Dice overall | wm | gm | nuclei |" in report
    assert "| 0 | noise 10 dB |" in report and "| 0 | retrained |" in report  # paper PN's Tables 5 and 4
    key = medveil.Key.load(next((tmp_path / "keys").glob("*.key")))
    assert key.params["dims"] == 3


def test_volumes_that_the_unets_cannot_halve_fail_before_training(tmp_path):
    data = SegmentationData(np.zeros((4, 34, 34, 34), np.uint8), np.zeros((4, 34, 34, 34), np.uint8),
                            np.array([0, 0, 1, 1]), "odd")
    from medveil.privacynet.evaluate import evaluate_privacynet

    with pytest.raises(medveil.InputError, match="divisible by 2\\*\\*depth = 4"):
        evaluate_privacynet(data, [1.0], 1, tmp_path / "o", tmp_path / "k", PrivacyNetConfig(patch=32))
    assert subject_pairs(data.subjects).shape == (4, 3)


def test_classes_merge_into_three_as_paper_pn_does():
    masks = np.arange(6, dtype=np.uint8).reshape(1, 6)
    merged = merge_classes(masks, CLASS_NAMES_3D)
    assert [THREE_CLASSES[k] for k in merged[0]] == ["background", "wm", "gm", "gm", "csf", "csf"]


def test_rician_noise_meets_its_snr_and_lower_resolution_averages_blocks():
    volume = np.zeros((1, 16, 16, 16), np.uint8)
    volume[0, 4:12, 4:12, 4:12] = 100
    noisy = rician_noise(volume, 10, np.random.default_rng(0)).astype(float)
    inside = noisy[0, 4:12, 4:12, 4:12]
    snr = 20 * np.log10(100 / inside.std())
    assert 9 < snr < 11 and abs(inside.mean() - 100) < 10
    assert rician_noise(volume, 40, np.random.default_rng(0))[0, 4:12, 4:12, 4:12].std() < inside.std() / 10
    coarse = lower_resolution(volume, 2)
    assert coarse.shape == volume.shape and np.array_equal(coarse[0, ::2, ::2, ::2], coarse[0, 1::2, 1::2, 1::2])
    assert coarse[0, 4, 4, 4] == 100 and coarse[0, 3, 3, 3] == 0
    edge = np.zeros((1, 4, 4, 4), np.uint8)
    edge[0, 1, :, :] = 80
    assert lower_resolution(edge, 2)[0, 0, 0, 0] == 40
