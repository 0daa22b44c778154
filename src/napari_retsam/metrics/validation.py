"""Checking and normalising the inputs of the metrics engine (pure numpy).

Every function here either returns a clean array or raises
:class:`~napari_retsam.errors.RetsamInputError` with a one-line message; none
of them silently coerces a value that could change a metric.

Accepted inputs
---------------
Prediction
    * ``bool`` array, or an integer array whose values lie in ``{0, 1}`` or in
      ``{0, 255}``: a **binary** prediction (``is_probability=False``).
    * a floating-point array: a **probability map** in ``[0, 1]``. NaN and
      ±inf are refused; values outside ``[0, 1]`` are refused unless
      ``sigmoid=True``, in which case the array is taken as logits and mapped
      through ``1 / (1 + exp(-x))``.
    * any other integer array (e.g. a label image with values 0, 1, 2) is
      refused. An 8-bit image holding ``probability x 255`` is decoded
      explicitly with :func:`decode_8bit_prediction`.
Gold standard
    ``bool``, or integer/float values in ``{0, 1}`` or ``{0, 255}``. A
    multi-class label image is refused unless ``gold_class=k`` is given, in
    which case the vessel mask is ``gold == k``.
Field of view (FOV)
    ``None`` (the whole image), ``bool``, or values in ``{0, 1}`` /
    ``{0, 255}``. A FOV with no pixel inside is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from napari_retsam.errors import RetsamInputError

__all__ = [
    "Prediction",
    "as_prediction",
    "as_gold",
    "as_fov",
    "check_same_shape",
    "check_threshold",
    "decode_8bit_prediction",
    "logistic",
]


@dataclass(frozen=True)
class Prediction:
    """A validated prediction.

    ``binary`` is the thresholded (or given) boolean mask. ``scores`` is the
    ranking used for ROC analysis: the probabilities, or the raw logits when
    the input was logits (ranking on logits avoids the ties that float
    saturation of the sigmoid would create); ``None`` for a binary prediction.
    ``prob`` holds the probabilities (``None`` for a binary prediction).
    """

    binary: np.ndarray
    scores: np.ndarray | None
    prob: np.ndarray | None

    @property
    def is_probability(self) -> bool:
        return self.scores is not None


def _values_summary(values: np.ndarray, limit: int = 6) -> str:
    shown = ", ".join(_fmt(v) for v in values[:limit])
    return shown + (", ..." if values.size > limit else "")


def _fmt(value: object) -> str:
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value.item() if isinstance(value, np.generic) else value)


def _as_array(data: object, what: str) -> np.ndarray:
    try:
        arr = np.asarray(data)
    except Exception as exc:  # ragged lists and other non-array input
        raise RetsamInputError(f"{what} is not an array: {exc}") from exc
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_
    ):
        raise RetsamInputError(f"{what} must be a numeric or boolean array, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise RetsamInputError(f"{what} must be real-valued, got dtype {arr.dtype}")
    if arr.ndim == 0:
        raise RetsamInputError(f"{what} must be an image (at least 1-D), got a scalar")
    if arr.size == 0:
        raise RetsamInputError(f"{what} is empty (shape {arr.shape})")
    return arr


def _binary_from_values(arr: np.ndarray, what: str) -> np.ndarray | None:
    """``arr != 0`` if ``arr`` holds only {0,1} or only {0,255}; else None."""
    if arr.dtype == np.bool_:
        return arr
    if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
        raise RetsamInputError(f"{what} contains NaN or infinite values")
    # values must be a subset of {0, top} with top = max in {0, 1, 255}: one pass, no sort
    top = arr.max()
    if top not in (0, 1, 255):
        return None
    if not np.all((arr == 0) | (arr == top)):
        return None
    return arr != 0


def as_prediction(pred: object, threshold: float = 0.5, *, sigmoid: bool = False) -> Prediction:
    """Validate a prediction and threshold it as ``prob >= threshold``.

    Returns a :class:`Prediction`. See the module docstring for the accepted
    inputs. With ``sigmoid=True`` a floating-point input is always taken as
    logits; an integer/bool input is still a binary mask.
    """
    arr = _as_array(pred, "prediction")
    threshold = check_threshold(threshold)
    if arr.dtype == np.bool_ or np.issubdtype(arr.dtype, np.integer):
        binary = _binary_from_values(arr, "prediction")
        if binary is None:
            present = np.unique(arr)
            raise RetsamInputError(
                f"integer prediction must be binary (values {{0,1}} or {{0,255}}), got values "
                f"{_values_summary(present)}; pass a float probability map in [0, 1] instead "
                "(e.g. an 8-bit map divided by 255)"
            )
        return Prediction(binary=binary, scores=None, prob=None)
    # floating point: a probability map (or logits)
    if not np.all(np.isfinite(arr)):
        n_nan = int(np.count_nonzero(np.isnan(arr)))
        n_inf = int(arr.size - n_nan - np.count_nonzero(np.isfinite(arr)))
        raise RetsamInputError(
            f"prediction contains {n_nan} NaN and {n_inf} infinite values; "
            "probabilities must be finite numbers in [0, 1]"
        )
    if sigmoid:
        prob = logistic(arr)
        return Prediction(binary=prob >= threshold, scores=arr, prob=prob)
    lo, hi = float(arr.min()), float(arr.max())
    if lo < 0.0 or hi > 1.0:
        raise RetsamInputError(
            f"probabilities must lie in [0, 1], got values in [{lo:.6g}, {hi:.6g}]; "
            "if these are logits, ask for a sigmoid (--sigmoid / sigmoid=True)"
        )
    return Prediction(binary=arr >= threshold, scores=arr, prob=arr)


def as_gold(gold: object, *, gold_class: int | None = None) -> np.ndarray:
    """Validate a gold standard and return it as a boolean vessel mask.

    Binary inputs (``bool``, ``{0,1}``, ``{0,255}``) map to ``gold != 0``. A
    multi-class label image needs ``gold_class=k`` and maps to ``gold == k``;
    asking for a class that does not occur in the image is refused.
    """
    arr = _as_array(gold, "gold standard")
    if gold_class is not None:
        if isinstance(gold_class, bool) or not isinstance(gold_class, (int, np.integer)):
            raise RetsamInputError(f"gold_class must be an integer label, got {gold_class!r}")
        if np.issubdtype(arr.dtype, np.floating):
            if not np.all(np.isfinite(arr)):
                raise RetsamInputError("gold standard contains NaN or infinite values")
            if not np.all(arr == np.round(arr)):
                raise RetsamInputError("gold standard labels must be whole numbers to pick a class")
        mask = arr == gold_class
        if not mask.any():
            present = np.unique(arr)
            raise RetsamInputError(
                f"gold_class {gold_class} does not occur in the gold standard (labels present: "
                f"{_values_summary(present)})"
            )
        return mask
    binary = _binary_from_values(arr, "gold standard")
    if binary is None:
        present = np.unique(arr)
        raise RetsamInputError(
            f"gold standard is not binary (values {_values_summary(present)}); "
            "expected {0,1} or {0,255}; for a label image choose the vessel class "
            "(gold_class / --gold-class)"
        )
    return binary


def as_fov(fov: object | None, shape: tuple[int, ...]) -> np.ndarray | None:
    """Validate a FOV mask for images of ``shape``; ``None`` means whole image.

    Refuses non-binary values, a shape other than ``shape`` and an empty FOV.
    """
    if fov is None:
        return None
    arr = _as_array(fov, "FOV mask")
    mask = _binary_from_values(arr, "FOV mask")
    if mask is None:
        present = np.unique(arr)
        raise RetsamInputError(
            f"FOV mask is not binary (values {_values_summary(present)}); expected {{0,1}} or {{0,255}}"
        )
    check_same_shape(shape, mask.shape, "prediction", "FOV mask")
    if not mask.any():
        raise RetsamInputError("FOV mask is empty: no pixel lies inside the field of view")
    return mask


def check_same_shape(
    shape_a: tuple[int, ...], shape_b: tuple[int, ...], name_a: str, name_b: str
) -> None:
    """Refuse two arrays of different shapes, naming both shapes."""
    if tuple(shape_a) != tuple(shape_b):
        raise RetsamInputError(
            f"{name_a} and {name_b} have different shapes: {tuple(shape_a)} vs {tuple(shape_b)}"
        )


def check_threshold(threshold: object) -> float:
    """A threshold must be a finite number in [0, 1]; returns it as float."""
    try:
        value = float(threshold)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise RetsamInputError(f"threshold must be a number in [0, 1], got {threshold!r}") from exc
    if not np.isfinite(value) or not 0.0 <= value <= 1.0:
        raise RetsamInputError(f"threshold must be a number in [0, 1], got {threshold!r}")
    return value


def logistic(logits: np.ndarray) -> np.ndarray:
    """Logistic function ``1 / (1 + exp(-x))`` in float64, without overflow warnings."""
    x = np.asarray(logits, dtype=np.float64)
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    ex = np.exp(x[~pos])
    out[~pos] = ex / (1.0 + ex)
    return out


def decode_8bit_prediction(arr: object) -> np.ndarray:
    """Interpret an 8-bit prediction image (e.g. a PNG written by a segmenter).

    * values only in ``{0, 255}`` (or only in ``{0, 1}``): a binary mask,
      returned as ``bool``;
    * anything else: ``probability x 255``, returned as ``float64 = value / 255``
      (so a threshold ``t`` keeps pixels with ``value >= 255 t``).

    Refuses arrays that are not ``uint8`` (e.g. 16-bit images), since their
    scale is unknown.
    """
    a = np.asarray(arr)
    if a.dtype == np.bool_:
        return a
    if a.dtype != np.uint8:
        raise RetsamInputError(
            f"an image prediction must be 8-bit (0/255 binary or probability x 255), got dtype {a.dtype}"
        )
    binary = _binary_from_values(a, "prediction")
    if binary is not None:
        return binary
    return a.astype(np.float64) / 255.0
