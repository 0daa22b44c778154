"""Train/test splits of the public retinal vessel datasets.

* **DRIVE** (Staal et al., IEEE TMI 23(4):501-509, 2004): the dataset's own
  folders, ``training/`` (ids ``21_training`` ... ``40_training``) and ``test/``
  (``01_test`` ... ``20_test``), 20/20.
* **STARE** (Hoover et al., IEEE TMI 19(3):203-210, 2000): 20 images, no
  official split. We use the 10/10 split by image number: ``im0001`` ...
  ``im0139`` (the first ten: 0001-0005, 0044, 0077, 0081, 0082, 0139) train,
  ``im0162`` ... ``im0324`` (the last ten) test - the "first ten / last ten"
  half split used e.g. by Orlando, Prokofyeva & Blaschko (IEEE TBME 64(1),
  2017). Many papers instead use leave-one-out; ``split="all"`` plus
  per-image evaluation supports that. An image number ``<= 150`` decides
  "train", so subsets or supersets of the 20 ids split the same way.
* **CHASE_DB1** (Fraz et al., IEEE TBME 59(9):2538-2548, 2012): 28 images of
  14 children, ``Image_NNL``/``Image_NNR``. No official split; we use the common
  20/8 split: the first 20 images (children 01-10) train, the last 8 (children
  11-14) test, as in Li et al. (IEEE TMI 35(1), 2016) and many later papers
  (e.g. Alom et al., R2U-Net, 2018). Both eyes of a child stay on one side.
* **folder** (generic layout): ``train/`` and ``test/`` sub-folders when the
  folder has them; a flat folder has no split and gives every sample for
  ``train``, ``test`` and ``all``.
"""

from __future__ import annotations

import re

from napari_retsam.errors import RetsamInputError

__all__ = ["SPLITS", "check_split", "stare_split_of", "chase_split_of", "STARE_TRAIN_MAX_NUMBER"]

SPLITS: tuple[str, ...] = ("train", "test", "all")

#: STARE images numbered up to this value are in the training half.
STARE_TRAIN_MAX_NUMBER = 150
#: CHASE_DB1 children numbered up to this value are in the training set.
CHASE_TRAIN_MAX_CHILD = 10

_STARE_ID = re.compile(r"^im(\d+)$", re.IGNORECASE)
_CHASE_ID = re.compile(r"^Image_(\d+)([LR])$", re.IGNORECASE)


def check_split(split: str) -> str:
    """Return ``split`` lower-cased, or raise :class:`RetsamInputError` if unknown."""
    s = str(split).lower()
    if s not in SPLITS:
        raise RetsamInputError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    return s


def stare_split_of(sample_id: str) -> str:
    """``"train"`` or ``"test"`` for a STARE id ``imNNNN`` (number <= 150 -> train)."""
    m = _STARE_ID.match(sample_id)
    if m is None:
        raise RetsamInputError(f"{sample_id!r} is not a STARE image id (expected imNNNN)")
    return "train" if int(m.group(1)) <= STARE_TRAIN_MAX_NUMBER else "test"


def chase_split_of(sample_id: str) -> str:
    """``"train"`` or ``"test"`` for a CHASE_DB1 id ``Image_NN[LR]`` (child <= 10 -> train)."""
    m = _CHASE_ID.match(sample_id)
    if m is None:
        raise RetsamInputError(f"{sample_id!r} is not a CHASE_DB1 image id (expected Image_NNL or Image_NNR)")
    return "train" if int(m.group(1)) <= CHASE_TRAIN_MAX_CHILD else "test"
