"""Data: Voice Bank + DEMAND loading and validation, the embedded synthetic corpus, the training crop."""

from cmgan_lib.data.crops import crop_pair

__all__ = ["crop_pair"]
