"""The evaluation transform without torch: an RGB image -> the same float32 CxSxS array, in numpy.

`byoc.core.preprocessing.eval_transform` resizes with torch's antialiased bilinear uint8 kernel (the
one torchvision uses for uint8 images on every SageMaker CPU: AVX2, AVX-512, ARM), then centre-crops,
scales and normalises in float32. This module is its twin for a serving image without torch: the same
weights (computed in float64, rescaled to int16 at the precision torch picks for each axis), the same
integer accumulation and rounding, width first, then height, rounded to uint8 between the passes, so
the pixels are identical and the normalised arrays equal (tests/test_eval_numpy.py: max abs difference
0 over every shape, mode and setting it tries). Only the crop's pixels are computed, from the input
window they read, so any shape is resized in bounded memory; past `MAX_STRETCH` the torch twin
switches to float weights (a level or two from torch's kernel there), while this module stays on it.

Only numpy and Pillow are imported. `Preprocessing` (any object with its four fields) says what to do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:  # only its fields are read here
    from byoc.core.images import Preprocessing


def resized_size(height: int, width: int, short: int) -> tuple[int, int]:
    """(height, width) with the short side `short` and the long side scaled, truncated (torchvision's rule)."""
    if width <= height:
        return int(short * height / width), short
    return short, int(short * width / height)


def crop_start(length: int, size: int) -> int:
    """Where a centre crop of `size` starts along an axis of `length` (negative: that much zero padding)."""
    if size > length:
        return -((size - length) // 2)
    return int(round((length - size) / 2.0))


class _Axis:
    """One axis of resize-then-centre-crop, as torch's uint8 antialiased bilinear kernel computes it
    (aten/src/ATen/native/cpu/UpSampleKernel.cpp, `_compute_index_ranges_int16_weights`): for each kept
    output, the first input it reads (`index`, relative to the window [first, stop)), its int16 weights
    (kept outputs x taps, zero past each output's own taps), the precision, and the zero padding the
    crop adds around the kept outputs."""

    def __init__(self, in_size: int, out_size: int, size: int):
        start = crop_start(out_size, size)
        lo, hi = max(start, 0), min(start + size, out_size)
        self.pad_before, self.pad_after = lo - start, start + size - hi
        weights = _FloatWeights(in_size, out_size)
        xmin, xsize, w = weights.of(np.arange(lo, hi))
        # The precision is one for the whole axis, from the largest weight of all its outputs.
        self.precision = _weights_precision(weights.max())
        v = w * float(1 << self.precision)
        self.weights = np.trunc(np.where(v < 0, v - 0.5, v + 0.5)).astype(np.int32)
        self.first = int(xmin.min())
        self.stop = int((xmin + xsize).max())
        # Taps past an output's own are weighted 0; their index is clipped into the window.
        self.index = np.minimum(xmin[:, None] + np.arange(weights.taps) - self.first, self.stop - self.first - 1)

    def apply(self, x: np.ndarray, axis: int) -> np.ndarray:
        """Resize the window `x` (uint8, `axis` running over [first, stop)) to the kept outputs (uint8)."""
        acc = np.full(x.shape[:axis] + (len(self.weights),) + x.shape[axis + 1 :], 1 << (self.precision - 1), np.int32)
        shape = [1] * x.ndim
        shape[axis] = len(self.weights)
        for k in range(self.weights.shape[1]):
            w = self.weights[:, k]
            if w.any():
                acc += np.take(x, self.index[:, k], axis=axis).astype(np.int32) * w.reshape(shape)
        return np.clip(acc >> self.precision, 0, 255).astype(np.uint8)


class _FloatWeights:
    """torch's float64 weights of one axis (`_compute_indices_min_size_weights_aa`, bilinear filter)."""

    def __init__(self, in_size: int, out_size: int):
        self.in_size, self.out_size = in_size, out_size
        self.scale = in_size / out_size
        # bilinear: interp_size 2, so a half-width of 1 input pixel, times the scale when shrinking
        self.support = self.scale if self.scale >= 1.0 else 1.0
        self.invscale = 1.0 / self.scale if self.scale >= 1.0 else 1.0
        self.taps = int(np.ceil(self.support)) * 2 + 1

    def of(self, outputs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(first input, number of inputs, normalised weights) for each of `outputs`; element by element
        in float64 in torch's order, so that the weights round alike."""
        centre = self.scale * (outputs.astype(np.float64) + 0.5)
        xmin = np.maximum((centre - self.support + 0.5).astype(np.int64), 0)  # C++ casts truncate toward 0
        xsize = np.clip(np.minimum((centre + self.support + 0.5).astype(np.int64), self.in_size) - xmin, 0, self.taps)
        j = np.arange(self.taps)
        w = np.clip(1.0 - np.abs((j + xmin[:, None] - centre[:, None] + 0.5) * self.invscale), 0.0, None)
        w[j >= xsize[:, None]] = 0.0
        total = _sequential_sum(w)
        w = np.divide(w, total[:, None], out=np.zeros_like(w), where=total[:, None] != 0.0)
        return xmin, xsize, w

    def max(self, chunk: int = 1 << 16) -> float:
        """The largest weight over all outputs, a chunk at a time: a 40000-pixel side resized 256-fold
        has 10 million outputs, of which the crop keeps a few hundred."""
        return max(
            float(self.of(np.arange(i, min(i + chunk, self.out_size)))[2].max()) for i in range(0, self.out_size, chunk)
        )


def _sequential_sum(w: np.ndarray) -> np.ndarray:
    """Row sums added left to right, as torch's loop does (numpy's pairwise sum may round differently)."""
    total = np.zeros(w.shape[0], dtype=np.float64)
    for k in range(w.shape[1]):
        total += w[:, k]
    return total


def _weights_precision(w_max: float) -> int:
    """The most fraction bits (up to 22) with which the largest weight still fits an int16 pair sum."""
    precision = 0
    while precision < 22 and int(0.5 + w_max * (1 << (precision + 1))) < (1 << 15):
        precision += 1
    return precision


def resize_center_crop(img: Image.Image, short: int, size: int) -> np.ndarray:
    """The uint8 HxWxC centre `size` crop of `img` with its short side resized to `short` (torch's
    antialiased bilinear uint8 kernel), computing only the crop's pixels."""
    pixels = np.asarray(img)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    height, width = pixels.shape[:2]
    new_h, new_w = resized_size(height, width, short)
    rows = _Axis(height, new_h, size) if new_h != height else None
    cols = _Axis(width, new_w, size) if new_w != width else None
    x = pixels[rows.first : rows.stop] if rows else pixels
    x = cols.apply(x[:, cols.first : cols.stop], axis=1) if cols else x
    x = rows.apply(x, axis=0) if rows else x
    return _crop_or_pad(x, new_h, new_w, size, rows, cols)


def _crop_or_pad(x: np.ndarray, new_h: int, new_w: int, size: int, rows: _Axis | None, cols: _Axis | None):
    """The crop of an axis left at its size (not resized, so not cut yet), then the zero padding of both."""
    pads = []
    for axis, (length, resized) in enumerate([(new_h, rows), (new_w, cols)]):
        if resized is None:
            start = crop_start(length, size)
            lo, hi = max(start, 0), min(start + size, length)
            x = x[lo:hi] if axis == 0 else x[:, lo:hi]
            pads.append((lo - start, start + size - hi))
        else:
            pads.append((resized.pad_before, resized.pad_after))
    if any(p for pair in pads for p in pair):
        x = np.pad(x, pads + [(0, 0)])
    return x


class EvalTransformNumpy:
    """RGB image -> normalised float32 CxSxS array, equal to `byoc.core.preprocessing.eval_transform`."""

    def __init__(self, pre: Preprocessing):
        self.pre = pre
        self.mean = np.asarray(pre.mean, dtype=np.float32).reshape(-1, 1, 1)
        self.std = np.asarray(pre.std, dtype=np.float32).reshape(-1, 1, 1)

    def __call__(self, img: Image.Image) -> np.ndarray:
        x = resize_center_crop(img, self.pre.resize_size, self.pre.image_size).transpose(2, 0, 1)
        # float32 throughout, the same three operations as the torch twin: x * (1/255), - mean, / std.
        x = x.astype(np.float32) * np.float32(1.0 / 255)
        return (x - self.mean) / self.std

    def __repr__(self) -> str:
        return f"EvalTransformNumpy(resize={self.pre.resize_size}, crop={self.pre.image_size})"


def eval_transform_numpy(pre: Preprocessing) -> EvalTransformNumpy:
    """Resize the short side to `resize_size`, centre-crop `image_size`, scale to [0, 1], normalise."""
    return EvalTransformNumpy(pre)


def eval_batch_numpy(images: list[Image.Image], transform: EvalTransformNumpy) -> np.ndarray:
    """RGB images -> one normalised float32 NxCxSxS batch."""
    return np.stack([transform(img) for img in images])


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float32, the largest logit subtracted first (as torch.softmax)."""
    x = np.asarray(logits, dtype=np.float32)
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)
