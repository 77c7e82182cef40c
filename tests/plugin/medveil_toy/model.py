"""``toy-linear``: a logistic regression on the pixels, as a server model."""

from torch import nn

from medveil.nn import ModelSpec, register_model


class Linear(nn.Module):
    def __init__(self, size, channels):
        super().__init__()
        self.layer = nn.Linear(channels * size * size, 1)

    def forward(self, x):
        return self.layer(x.flatten(1)).squeeze(1)


register_model(ModelSpec("toy-linear", lambda size, channels, outputs: Linear(size, channels), "logistic regression"))
