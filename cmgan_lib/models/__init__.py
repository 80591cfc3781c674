"""The CMGAN networks, state-dict compatible with the official checkpoints."""

from cmgan_lib.models.discriminator import Discriminator, LearnableSigmoid
from cmgan_lib.models.generator import TSCB, TSCNet


def count_parameters(module) -> int:
    """Trainable parameters, as the paper and torchinfo count them."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


__all__ = ["TSCNet", "TSCB", "Discriminator", "LearnableSigmoid", "count_parameters"]
