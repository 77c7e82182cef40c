"""Networks in plain ``torch.nn`` (no torchvision)."""

from medveil.nn.classifiers import SeedCNN, SmallResNet, build_classifier

__all__ = ["SeedCNN", "SmallResNet", "build_classifier"]
