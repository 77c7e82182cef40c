import csv
import math

import numpy as np
import pytest
import torch

import medveil
from medveil import metrics
from medveil.data.segmentation import SegmentationData, simulate_subjects, subject_pairs
from medveil.nn import GeneralisedDiceLoss, UNet
from medveil.privacynet.train import PrivacyNet, PrivacyNetConfig, update_discriminator, update_encoder_segmenter
from medveil.schemes.adversarial import create_adversarial_key


@pytest.fixture(scope="module")
def simulated():
    return simulate_subjects(subjects=6, scans=2, size=48, seed=0)


def test_simulated_subjects_have_labels_ids_and_recognisable_anatomy(simulated):
    assert simulated.images.shape == (12, 48, 48) and simulated.images.dtype == np.uint8
    assert set(np.unique(simulated.masks)) == {0, 1, 2, 3}
    assert list(simulated.subjects) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert not np.array_equal(simulated.images[0], simulated.images[1])  # scans of one subject differ
    pairs = subject_pairs(simulated.subjects)
    scores = metrics.ms_ssim(simulated.images[pairs[:, 0]], simulated.images[pairs[:, 1]])
    same = pairs[:, 2] == 1
    assert scores[same].mean() > scores[~same].mean()  # what makes plain images re-identifiable


def test_subject_pairs_are_balanced_and_labelled(simulated):
    pairs = subject_pairs(simulated.subjects, seed=3)
    same = simulated.subjects[pairs[:, 0]] == simulated.subjects[pairs[:, 1]]
    assert np.array_equal(same, pairs[:, 2] == 1)
    assert pairs[:, 2].sum() == 6 and len(pairs) == 12 and (pairs[:, 0] < pairs[:, 1]).all()


def test_split_by_subject_keeps_subjects_apart(simulated):
    train, test = simulated.split_by_subject((0.7, 0.3))
    assert not set(train.subjects) & set(test.subjects) and len(train) + len(test) == len(simulated)


def test_own_triples_load_from_npz_and_bad_files_are_clear_errors(tmp_path, simulated):
    simulated.save(tmp_path / "mine.npz")
    loaded = SegmentationData.load(tmp_path / "mine.npz")
    assert np.array_equal(loaded.masks, simulated.masks) and loaded.class_names == simulated.class_names
    np.savez(tmp_path / "partial.npz", images=simulated.images)
    with pytest.raises(medveil.InputError, match="missing arrays masks, subjects"):
        SegmentationData.load(tmp_path / "partial.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(medveil.InputError, match="not a readable"):
        SegmentationData.load(tmp_path / "junk.npz")
    with pytest.raises(medveil.InputError, match="must be uint8"):
        SegmentationData(simulated.images.astype(float), simulated.masks, simulated.subjects)


def test_dice_per_class_and_size_weighted_overall_by_hand():
    truth = np.array([[[0, 1, 1, 2]], [[2, 2, 2, 0]]])
    predicted = np.array([[[1, 1, 0, 2]], [[2, 2, 0, 0]]])
    scores = metrics.dice_scores(predicted, truth, ("background", "a", "b"))
    # a: image 0 only, |P|=2 |T|=2 overlap 1 -> 0.5. b: image 0 -> 1.0; image 1: |P|=2 |T|=3 overlap 2 -> 0.8.
    assert scores["a"] == pytest.approx(0.5) and scores["b"] == pytest.approx(0.9)
    assert scores["overall"] == pytest.approx((0.5 * 2 + 0.9 * 4) / 6)


def test_generalised_dice_loss_is_zero_for_a_perfect_prediction_and_high_for_a_wrong_one():
    target = torch.tensor([[[0, 1], [2, 2]]])
    perfect = torch.nn.functional.one_hot(target, 3).permute(0, 3, 1, 2).float() * 50
    wrong = torch.roll(perfect, 1, dims=1)
    loss = GeneralisedDiceLoss()
    assert float(loss(perfect, target)) == pytest.approx(0, abs=1e-4)
    assert float(loss(wrong, target)) == pytest.approx(1, abs=1e-4)


def test_retrieval_map_and_best_threshold_accuracy_by_hand():
    # Query 0's neighbours in order: 2 (other subject), 1 (same) -> AP 1/2. Query 1: 2, then 0 -> 1/2.
    # Query 2 has no same-subject item and is skipped.
    embeddings = np.array([[0.0], [2.0], [1.1]])
    assert metrics.mean_average_precision(embeddings, np.array([7, 7, 8])) == pytest.approx(0.5)
    assert metrics.mean_average_precision(np.array([[0.0], [0.1], [5.0], [5.2]]), np.array([1, 1, 2, 2])) == 1.0
    # Scores 0.9, 0.8 same; 0.85, 0.1 different: the best threshold gets 3 of 4.
    assert metrics.best_threshold_accuracy(np.array([0.9, 0.8, 0.85, 0.1]), np.array([1, 1, 0, 0])) == 0.75
    # Low score meaning "same" counts too.
    assert metrics.best_threshold_accuracy(np.array([0.1, 0.2, 0.8, 0.9]), np.array([1, 1, 0, 0])) == 1.0


def _snapshot(module):
    return [p.detach().clone() for p in module.parameters()]


def _changed(module, before):
    return any(not torch.equal(p, q) for p, q in zip(module.parameters(), before))


@pytest.mark.parametrize("dims", [2, 3])
def test_alternating_updates_move_encoder_and_segmenter_then_only_the_discriminator(dims):
    torch.manual_seed(0)
    net = PrivacyNet(classes=3, width=4, depth=1, dims=dims)
    opt_es = torch.optim.Adam([*net.encoder.parameters(), *net.segmenter.parameters()], lr=1e-2)
    opt_d = torch.optim.Adam(net.discriminator.parameters(), lr=1e-2)
    side = (16,) * dims
    xi, xj = torch.rand(4, 1, *side), torch.rand(4, 1, *side)
    yi, yj = torch.randint(0, 3, (4, *side)), torch.randint(0, 3, (4, *side))
    same = torch.tensor([1.0, 0.0, 1.0, 0.0])

    e, s, d = _snapshot(net.encoder), _snapshot(net.segmenter), _snapshot(net.discriminator)
    record = update_encoder_segmenter(net, opt_es, xi, xj, yi, yj, same, lam=3.0)
    assert _changed(net.encoder, e) and _changed(net.segmenter, s) and not _changed(net.discriminator, d)
    assert set(record) == {"seg_loss", "dis_loss_es"}

    e, s, d = _snapshot(net.encoder), _snapshot(net.segmenter), _snapshot(net.discriminator)
    record = update_discriminator(net, opt_d, xi, xj, same)
    assert _changed(net.discriminator, d) and not _changed(net.encoder, e) and not _changed(net.segmenter, s)
    assert 0 <= record["dis_accuracy"] <= 1


def test_encoder_as_a_scheme_is_deterministic_per_weights_and_bound_to_its_key(tmp_path, simulated):
    torch.manual_seed(0)
    key = create_adversarial_key(UNet(1, 1, 4, 2), tmp_path / "a.key", size=48, lam=3)
    scheme = medveil.from_key(key)
    first = scheme(simulated.images)
    assert first.shape == simulated.images.shape and first.dtype == np.uint8
    assert np.array_equal(first, medveil.from_key(medveil.Key.load(tmp_path / "a.key"))(simulated.images))
    assert np.array_equal(first[3], scheme(simulated.images[3]))  # a single image is encoded like in a batch
    other = create_adversarial_key(UNet(1, 1, 4, 2), tmp_path / "b.key", size=48, lam=3)
    assert not np.array_equal(first, medveil.from_key(other)(simulated.images))
    assert scheme.describe().startswith("adversarial(") and "lambda=3" in type(scheme).params_label(key.params)

    with pytest.raises(medveil.InputError, match=r"\(\.\.\., 48, 48\)"):
        scheme(simulated.images[:, :32, :32])
    (tmp_path / "a.key.encoder.pt").write_bytes((tmp_path / "b.key.encoder.pt").read_bytes())
    with pytest.raises(medveil.SchemeMismatchError, match="do not belong"):
        medveil.from_key(medveil.Key.load(tmp_path / "a.key"))
    with pytest.raises(medveil.ParameterError, match="not keygen"):
        medveil.generate_key("adversarial")


def test_evaluation_end_to_end_writes_results_and_resumes_from_cache(tmp_path, simulated):
    from medveil.privacynet.evaluate import columns, evaluate_privacynet

    config = PrivacyNetConfig(epochs=1, pretrain_epochs=1, width=4, depth=1, progress=False)
    rows = evaluate_privacynet(simulated, [1.0], 1, tmp_path / "out", tmp_path / "keys", config, attack_epochs=1)
    with open(tmp_path / "out" / "results.csv") as fh:
        table = list(csv.DictReader(fh))
    assert list(table[0]) == columns(simulated) and [r["lambda"] for r in table] == ["plain", "1"]
    assert math.isnan(rows[0]["reid_dadv_acc"]) and 0 <= rows[1]["reid_dadv_acc"] <= 1
    assert all(0 <= rows[i]["dice_overall"] <= 1 and 0 < rows[i]["reid_map"] <= 1 for i in range(2))
    with open(tmp_path / "out" / "attacks.csv") as fh:
        attacks = list(csv.DictReader(fh))
    assert [(a["scheme"], a["params"], a["attacker_data"]) for a in attacks] == [
        ("adversarial", "lambda=1", "prior"), ("adversarial", "lambda=1", "public")]
    assert (tmp_path / "out" / "figures" / "examples.png").exists() and (tmp_path / "out" / "report.md").exists()
    label_row = next(line for line in (tmp_path / "out" / "report.md").read_text().splitlines()
                     if line.startswith("| tissue labels |"))
    msssim_on_labels = float(label_row.split(" | ")[5])
    assert 0.5 <= msssim_on_labels <= 1  # re-identification from the true label maps, reported beside the λ rows
    assert list((tmp_path / "keys").glob("*.key"))  # keys stay out of the report folder
    assert not list((tmp_path / "out").rglob("*.key"))

    cached = tmp_path / "out" / "runs" / "lambda-1-seed0.json"
    stamp = cached.stat().st_mtime_ns
    again = evaluate_privacynet(simulated, [1.0], 1, tmp_path / "out", tmp_path / "keys", config, attack_epochs=1)
    assert cached.stat().st_mtime_ns == stamp and again[1]["reid_map"] == rows[1]["reid_map"]


def test_cli_rejects_bad_triples_and_lambdas_with_one_line(tmp_path):
    from typer.testing import CliRunner

    from medveil.cli import app

    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    result = CliRunner().invoke(app, ["evaluate", "privacynet", "-o", str(tmp_path / "out"), "--data",
                                      str(tmp_path / "junk.npz")])
    assert result.exit_code != 0 and "not a readable .npz" in result.output
    assert len([line for line in result.output.splitlines() if line.strip()]) == 1
    result = CliRunner().invoke(app, ["evaluate", "privacynet", "-o", str(tmp_path / "out"), "--lambdas", "1,x"])
    assert result.exit_code != 0 and "comma-separated numbers" in result.output


@pytest.mark.parametrize(("images", "subjects", "message"), [
    ((8, 50, 50), [0, 0, 1, 1, 2, 2, 3, 3], "divisible by"),  # the U-Nets halve the side twice
    ((8, 48, 40), [0, 0, 1, 1, 2, 2, 3, 3], "square"),
    ((8, 32, 32), [0, 0, 1, 1, 2, 2, 3, 3], "at least 33 pixels a side"),  # too small for MS-SSIM
    ((8, 48, 48), [0, 1, 2, 3, 4, 5, 6, 7], "same-subject"),  # one image per subject: nothing to re-identify
])
def test_unusable_triples_fail_before_any_training(tmp_path, images, subjects, message):
    from medveil.privacynet.evaluate import evaluate_privacynet

    data = SegmentationData(np.zeros(images, np.uint8), np.zeros(images, np.uint8), np.array(subjects))
    config = PrivacyNetConfig(epochs=1, pretrain_epochs=1, progress=False)
    with pytest.raises(medveil.InputError, match=message):
        evaluate_privacynet(data, [1.0], 1, tmp_path / "out", tmp_path / "keys", config)
    assert not (tmp_path / "out").exists() and not (tmp_path / "keys").exists()
