"""Networks in plain ``torch.nn`` (no torchvision)."""

from medveil.nn.classifiers import SeedCNN, SmallResNet, build_classifier
from medveil.nn.losses import GeneralisedDiceLoss
from medveil.nn.siamese import SiameseDiscriminator, pair_accuracy
from medveil.nn.unet import UNet
from medveil.nn.vae import ConvVAE, VAELoss

__all__ = ["ConvVAE", "GeneralisedDiceLoss", "SeedCNN", "SiameseDiscriminator", "SmallResNet", "UNet", "VAELoss",
           "build_classifier", "pair_accuracy"]
