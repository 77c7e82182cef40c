"""Networks in plain ``torch.nn`` (no torchvision); server models register by name, plugins' too (entry points, on first need)."""

from medveil.nn.classifiers import ModelSpec, SeedCNN, SmallResNet, available_models, build_classifier, register_model
from medveil.nn.losses import GeneralisedDiceLoss
from medveil.nn.siamese import SiameseDiscriminator, pair_accuracy
from medveil.nn.unet import UNet
from medveil.nn.vae import ConvVAE, VAELoss

__all__ = ["ConvVAE", "GeneralisedDiceLoss", "ModelSpec", "SeedCNN", "SiameseDiscriminator", "SmallResNet", "UNet",
           "VAELoss", "available_models", "build_classifier", "pair_accuracy", "register_model"]
