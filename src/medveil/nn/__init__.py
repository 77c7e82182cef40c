"""Networks in plain ``torch.nn`` (no torchvision); server models register by name, plugins' too (entry points, on first need)."""

from medveil.nn.classifiers import (ModelSpec, SeedCNN, SmallResNet, available_models, build_classifier, model_spec,
                                    register_model)
from medveil.nn.structured import BlockBagNet, CodeEmbeddingCNN, PatchEmbeddingNet, PerPositionCNN, absorb_block_key
from medveil.nn.losses import GeneralisedDiceLoss
from medveil.nn.siamese import SiameseDiscriminator, pair_accuracy
from medveil.nn.unet import UNet
from medveil.nn.vae import ConvVAE, VAELoss

__all__ = ["BlockBagNet", "CodeEmbeddingCNN", "ConvVAE", "GeneralisedDiceLoss", "ModelSpec", "PatchEmbeddingNet", "PerPositionCNN",
           "SeedCNN", "SiameseDiscriminator", "SmallResNet", "UNet", "VAELoss", "absorb_block_key", "available_models",
           "build_classifier", "model_spec", "pair_accuracy", "register_model"]
