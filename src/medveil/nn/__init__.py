"""Networks in plain ``torch.nn`` (no torchvision)."""

from medveil.nn.classifiers import SeedCNN, SmallResNet, build_classifier
from medveil.nn.unet import UNet

__all__ = ["SeedCNN", "SmallResNet", "UNet", "build_classifier"]
