"""Server models that learn a scheme's structure: each absorbs its family's keyed structure exactly."""

import copy

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import medveil
from medveil.data.pipeline import ImageTensors
from medveil.nn import CodeEmbeddingCNN, PatchEmbeddingNet, PerPositionCNN, absorb_block_key, build_classifier
from medveil.nn.structured import nibble_planes


def as_input(images: np.ndarray) -> torch.Tensor:
    """uint8 ``(n, H, W)`` or ``(n, H, W, 3)`` as the models take them: ``(n, C, H, W)`` codes / 255."""
    x = torch.from_numpy(images.astype(np.float32) / 255)
    return x[:, None] if x.ndim == 3 else x.permute(0, 3, 1, 2)


def test_the_code_embedding_is_invariant_to_a_relabelling_of_codes(rng):
    torch.manual_seed(0)
    model = CodeEmbeddingCNN(levels=50, size=16).eval()
    codes = rng.integers(0, 50, (6, 16, 16)).astype(np.uint8)
    relabel = rng.permutation(50)
    relabelled = copy.deepcopy(model)
    with torch.no_grad():
        relabelled.embedding.weight[torch.from_numpy(relabel)] = model.embedding.weight
    labels = torch.tensor([0.0, 1, 0, 1, 1, 0])
    loss = torch.nn.BCEWithLogitsLoss()
    with torch.no_grad():
        out, out_relabelled = model(as_input(codes)), relabelled(as_input(relabel[codes].astype(np.uint8)))
    assert torch.equal(out, out_relabelled) and loss(out, labels) == loss(out_relabelled, labels)
    assert not torch.equal(out, model(as_input(relabel[codes].astype(np.uint8))))  # it does read the codes


@settings(max_examples=12, deadline=None)
@given(block=st.sampled_from([2, 4, 8]), channels=st.sampled_from([1, 3]), seed=st.integers(0, 2**16))
def test_the_patch_embedding_reproduces_a_plain_model_on_tanaka_input_with_key_transformed_weights(block, channels, seed):
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    shape = (3, 16, 16) if channels == 1 else (3, 16, 16, 3)
    plain = rng.integers(0, 256, shape, dtype=np.uint8)
    scheme = medveil.from_key(medveil.generate_key("tanaka", block=block, channels=channels))
    net = PatchEmbeddingNet(block, size=16, in_channels=channels, dim=8).eval()
    keyed = copy.deepcopy(net)
    perm, flips = scheme.block_key()
    keyed.embed = absorb_block_key(net.embed, perm, flips, channels)
    with torch.no_grad():
        expected, got = net(as_input(plain)), keyed(as_input(scheme(plain)))
        assert torch.allclose(got, expected, atol=1e-5)
        # the key does matter: without it the embedding of the obfuscated patches is not the plain one's
        # (compared before the pooled head, whose random outputs can sit within any tolerance of each other)
        embedded = lambda images: net.embed(nibble_planes(as_input(images)))
        assert not torch.allclose(embedded(scheme(plain)), embedded(plain), atol=1e-3)


def test_the_per_position_layer_absorbs_skk_negation(rng):
    torch.manual_seed(0)
    plain = rng.integers(0, 256, (4, 16, 16), dtype=np.uint8)
    scheme = medveil.from_key(medveil.generate_key("skk"))
    negate = torch.from_numpy(scheme.pixel_keys((16, 16))[0][..., 0])
    model = PerPositionCNN(size=16).eval()
    keyed = copy.deepcopy(model)
    with torch.no_grad():
        keyed.weight.copy_(torch.where(negate, -1.0, 1.0)[None])
        keyed.bias.copy_(negate.float()[None])
        assert torch.allclose(keyed(as_input(scheme(plain))), model(as_input(plain)), atol=1e-5)


def test_matched_picks_the_family_from_public_parameters_only():
    assert isinstance(build_classifier("matched", 64, scheme="intensity", params={"levels": 50}), CodeEmbeddingCNN)
    assert build_classifier("matched", 64, scheme="intensity", params={"levels": 50}).embedding.num_embeddings == 50
    assert isinstance(build_classifier("matched", 64, scheme="skk-smooth", params={"block": 4}), PerPositionCNN)
    assert build_classifier("matched", 64, scheme="tanaka", params={"block": 8}).block == 8
    assert type(build_classifier("matched", 64, scheme=None)).__name__ == "SeedCNN"


def test_codes_scaling_gives_the_exact_codes_back(rng):
    images = rng.integers(0, 256, (3, 8, 8), dtype=np.uint8)
    x, _ = ImageTensors(images, np.zeros(3), scale="codes")[1]
    assert torch.equal((x[0] * 255).round().to(torch.uint8), torch.from_numpy(images[1]))
    with pytest.raises(ValueError, match="scale"):
        ImageTensors(images, np.zeros(3), scale="zscore")
