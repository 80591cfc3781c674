"""Data: Voice Bank + DEMAND loading and validation, the embedded synthetic corpus, the training crop.

Submodules import lazily so that validation and the synthetic corpus do not pull in torch:
`dataset` (CMGANDataset, torch), `layout` (find_split, list_pairs), `validate`, `synthetic`.
"""

from cmgan_lib.data.crops import crop_pair
from cmgan_lib.data.layout import find_split, list_pairs

__all__ = ["crop_pair", "find_split", "list_pairs"]
