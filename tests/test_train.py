import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from medveil import metrics
from medveil.data.pipeline import ImageTensors, RandomAffine, minmax
from medveil.nn import SeedCNN, SmallResNet
from medveil.training.loop import TrainConfig, fit


def toy_task(rng, n=128):
    """Bright-left vs bright-right images: learnable in a few steps."""
    labels = rng.integers(0, 2, n)
    images = rng.integers(0, 60, (n, 16, 16)).astype(np.uint8)
    for img, lab in zip(images, labels):
        img[:, :8] += 150 if lab else 0
        img[:, 8:] += 0 if lab else 150
    return images, labels


@pytest.mark.parametrize("model_cls", [lambda: SeedCNN(size=16), SmallResNet])
def test_training_reduces_loss(rng, model_cls):
    images, labels = toy_task(rng)
    data = ImageTensors(images, labels)
    result = fit(model_cls(), data, data, torch.nn.BCEWithLogitsLoss(), TrainConfig(epochs=4, batch_size=32, progress=False))
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < 0.6 * losses[0]


def test_best_validation_weights_are_kept(rng):
    images, labels = toy_task(rng)
    data = ImageTensors(images, labels)
    model = SeedCNN(size=16)
    result = fit(model, data, data, torch.nn.BCEWithLogitsLoss(), TrainConfig(epochs=3, batch_size=32, progress=False))
    best = max(result.history, key=lambda h: h["val_score"])
    assert result.best_epoch == best["epoch"]
    with torch.no_grad():
        loss = torch.nn.BCEWithLogitsLoss()(model(torch.stack([data[i][0] for i in range(len(data))])),
                                            torch.tensor(labels, dtype=torch.float32))
    assert float(loss) == pytest.approx(best["val_loss"], rel=1e-4)


def test_interrupted_training_resumes_to_the_same_result(tmp_path, rng):
    x = torch.tensor(rng.normal(size=(64, 4)), dtype=torch.float32)
    y = (x.sum(1) > 0).float()
    data = TensorDataset(x, y)
    loss = torch.nn.BCEWithLogitsLoss()

    def model():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(4, 1), torch.nn.Flatten(0))

    straight = fit(model(), data, data, loss, TrainConfig(epochs=4, batch_size=16, progress=False))
    ckpt = tmp_path / "c.pt"
    fit(model(), data, data, loss, TrainConfig(epochs=2, batch_size=16, progress=False, checkpoint=ckpt))
    resumed = fit(model(), data, data, loss, TrainConfig(epochs=4, batch_size=16, progress=False, checkpoint=ckpt))
    assert [h["train_loss"] for h in resumed.history] == pytest.approx([h["train_loss"] for h in straight.history])


def test_on_the_fly_obfuscation_matches_obfuscating_first(rng, key8):
    import medveil

    scheme = medveil.from_key(key8)
    images = rng.integers(0, 256, (5, 16, 16), dtype=np.uint8)
    data = ImageTensors(images, np.zeros(5), scheme)
    for i in range(5):
        expected = minmax(scheme(images[i]))
        assert np.array_equal(data[i][0][0].numpy(), expected)


def test_augmentation_moves_codes_without_inventing_values(rng):
    image = torch.tensor(rng.integers(1, 50, (1, 32, 32)), dtype=torch.float32) / 49
    augment = RandomAffine(generator=torch.Generator().manual_seed(0))
    outputs = [augment(image) for _ in range(5)]
    allowed = set(image.unique().tolist()) | {0.0}
    for out in outputs:
        assert out.shape == image.shape and set(out.unique().tolist()) <= allowed
    assert any(not torch.equal(out, image) for out in outputs)
    flip = RandomAffine(shift=0, degrees=0, flip=1.0)(image)
    assert torch.equal(flip, image.flip(-1))


def test_classification_scores_by_hand():
    scores = metrics.classification_scores(np.array([1, 1, 0, 0]), np.array([0.9, 0.4, 0.6, 0.1]))
    assert scores["accuracy"] == 0.5
    assert scores["f1"] == pytest.approx(0.5)  # precision 1/2, recall 1/2
    assert scores["auc"] == pytest.approx(0.75)  # 3 of 4 positive-negative pairs ranked right
