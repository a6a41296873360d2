"""RandAugment for video clips (AUG.AA_TYPE, AUG.INTERPOLATION), with PySlowFast's policy
(the grammar: vov3d/utils/augment_policy.py). Without `w` the operations are chosen
uniformly with replacement; with `w0` by its weights, without replacement.

Per clip, `n` operations are drawn (numpy's generator), and each is applied with
probability 0.5 with a magnitude drawn once (Python's generator): every frame of the clip
gets the same operations with the same arguments, so the clip stays temporally
consistent. Operations that measure the image (AutoContrast, Equalize, Contrast) measure
each frame, as PIL does for each frame of a list. Every operation works on the whole clip
at once: the frames are stacked along the channel axis ([H, W, 3T] uint8) and go through
one OpenCV call or one numpy expression; bicubic warps run over groups of four channels,
OpenCV's limit for that kernel.

Geometric operations fill uncovered pixels with grey 128, as PySlowFast does; they map
output pixels to input pixels as PIL's affine transforms do (pixel centres at +0.5).
"""
import random
from typing import Callable, Dict, List, Sequence, Tuple

import cv2
import numpy as np

from vov3d.utils.augment_policy import MAX_MAGNITUDE as MAX_LEVEL, RandAugmentPolicy

FILL = 128
INTERPOLATIONS = ("bilinear", "bicubic", "random")
_CV2_INTERP = {"bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC}

# The operations a policy chooses from, in PySlowFast's order (the choice indexes them).
TRANSFORMS = ("AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "SolarizeAdd",
              "Color", "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateXRel",
              "TranslateYRel")
_INCREASING = {"Posterize": "PosterizeIncreasing", "Solarize": "SolarizeIncreasing",
               "Color": "ColorIncreasing", "Contrast": "ContrastIncreasing",
               "Brightness": "BrightnessIncreasing", "Sharpness": "SharpnessIncreasing"}
INCREASING_TRANSFORMS = tuple(_INCREASING.get(name, name) for name in TRANSFORMS)
# Choice weights of `w0`, by operation (the increasing variants share their base's weight).
CHOICE_WEIGHTS_0 = {"Rotate": 0.3, "ShearX": 0.2, "ShearY": 0.2, "TranslateXRel": 0.1, "TranslateYRel": 0.1,
                    "Color": 0.025, "Sharpness": 0.025, "AutoContrast": 0.025, "Solarize": 0.005,
                    "SolarizeAdd": 0.005, "Contrast": 0.005, "Brightness": 0.005, "Equalize": 0.005,
                    "Posterize": 0.0, "Invert": 0.0}
# ITU-R 601 luma as PIL converts RGB to L: (R*19595 + G*38470 + B*7471 + 2^15) >> 16.
_LUMA_RGB = (19595, 38470, 7471)


# ------------------------------------------------------------------ magnitude -> arguments
def _negate_half(value: float) -> float:
    return -value if random.random() > 0.5 else value


def _level_args(name: str, level: float) -> tuple:
    """The arguments of operation `name` at magnitude `level` (0..10); signs drawn here."""
    fraction = level / MAX_LEVEL
    if name == "Rotate":
        return (_negate_half(fraction * 30.0),)
    if name in ("ShearX", "ShearY"):
        return (_negate_half(fraction * 0.3),)
    if name in ("TranslateXRel", "TranslateYRel"):
        return (_negate_half(fraction * 0.45),)
    if name == "Posterize":
        return (int(fraction * 4),)
    if name == "PosterizeIncreasing":
        return (4 - int(fraction * 4),)
    if name == "Solarize":
        return (int(fraction * 256),)
    if name == "SolarizeIncreasing":
        return (256 - int(fraction * 256),)
    if name == "SolarizeAdd":
        return (int(fraction * 110),)
    if name in ("Color", "Contrast", "Brightness", "Sharpness"):
        return (fraction * 1.8 + 0.1,)
    if name.endswith("Increasing"):  # the enhancements: 1 (no change) +- up to 0.9
        return (1.0 + _negate_half(fraction * 0.9),)
    return ()


# ------------------------------------------------------------------ operations
# Each takes and returns a clip [H, W, T, 3] uint8 (frames side by side on the channel axes).
def _per_plane_lut(x: np.ndarray, luts: np.ndarray) -> np.ndarray:
    """Apply a lookup table per (frame, channel) plane: luts [T, 3, 256]."""
    planes = x.shape[2] * x.shape[3]
    offsets = (np.arange(planes, dtype=np.int32) * 256).reshape(1, 1, x.shape[2], x.shape[3])
    return luts.reshape(-1).astype(np.uint8)[x + offsets]


def _same_lut(x: np.ndarray, lut: np.ndarray) -> np.ndarray:
    return cv2.LUT(x.reshape(x.shape[0], -1), lut.astype(np.uint8)).reshape(x.shape)


def auto_contrast(x: np.ndarray) -> np.ndarray:
    """Each plane stretched so its darkest value becomes 0 and its brightest 255."""
    lo = x.min(axis=(0, 1)).astype(np.float64)[..., None]
    hi = x.max(axis=(0, 1)).astype(np.float64)[..., None]
    flat = hi <= lo
    scale = 255.0 / np.where(flat, 1.0, hi - lo)
    levels = np.arange(256, dtype=np.float64)
    luts = np.clip(np.trunc(levels * scale - lo * scale), 0, 255)
    return _per_plane_lut(x, np.where(flat, levels, luts))


def equalize(x: np.ndarray) -> np.ndarray:
    """Histogram equalisation of each plane, with PIL's rounding and its identity cases."""
    h, w, t, c = x.shape
    offsets = (np.arange(t * c, dtype=np.int64) * 256).reshape(1, 1, t, c)
    hist = np.bincount((x + offsets).ravel(), minlength=t * c * 256).reshape(t * c, 256)
    brightest = 255 - np.argmax(hist[:, ::-1] > 0, axis=1)
    step = (h * w - hist[np.arange(t * c), brightest]) // 255
    before = np.cumsum(hist, axis=1) - hist
    safe = np.maximum(step, 1)[:, None]
    luts = np.minimum((safe // 2 + before) // safe, 255)
    luts = np.where(step[:, None] > 0, luts, np.arange(256))
    return _per_plane_lut(x, luts.reshape(t, c, 256))


def invert(x: np.ndarray) -> np.ndarray:
    return 255 - x


def posterize(x: np.ndarray, bits: int) -> np.ndarray:
    if bits >= 8:
        return x
    return x & np.uint8((0xFF << (8 - bits)) & 0xFF)


def solarize(x: np.ndarray, threshold: int) -> np.ndarray:
    levels = np.arange(256)
    return _same_lut(x, np.where(levels < threshold, levels, 255 - levels))


def solarize_add(x: np.ndarray, add: int, threshold: int = 128) -> np.ndarray:
    levels = np.arange(256)
    return _same_lut(x, np.where(levels < threshold, np.minimum(levels + add, 255), levels))


def _blend(degenerate: np.ndarray, x: np.ndarray, factor: float) -> np.ndarray:
    """PIL's blend: degenerate + factor (x - degenerate), clipped and truncated to uint8."""
    out = np.broadcast_to(degenerate, x.shape).astype(np.float32)
    out += np.float32(factor) * (x.astype(np.float32) - out)
    return np.clip(out, 0, 255, out=out).astype(np.uint8)


def _luma(x: np.ndarray, rgb: bool) -> np.ndarray:
    """[H, W, T] int32 grey levels as PIL converts RGB to L."""
    weights = _LUMA_RGB if rgb else _LUMA_RGB[::-1]
    y = x.astype(np.int32)
    return (y[..., 0] * weights[0] + y[..., 1] * weights[1] + y[..., 2] * weights[2] + 32768) >> 16


def color(x: np.ndarray, factor: float, rgb: bool = True) -> np.ndarray:
    return _blend(_luma(x, rgb)[..., None], x, factor)


def contrast(x: np.ndarray, factor: float, rgb: bool = True) -> np.ndarray:
    mean = np.floor(_luma(x, rgb).mean(axis=(0, 1)) + 0.5)  # per frame
    return _blend(mean[None, None, :, None], x, factor)


def brightness(x: np.ndarray, factor: float) -> np.ndarray:
    return _blend(np.zeros((1, 1, 1, 1), np.float32), x, factor)


_SMOOTH = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], np.float32) / 13.0


def sharpness(x: np.ndarray, factor: float) -> np.ndarray:
    """Blend with PIL's SMOOTH filter of the frames (border pixels kept as they are)."""
    stacked = x.reshape(x.shape[0], x.shape[1], -1)
    smooth = cv2.filter2D(stacked, -1, _SMOOTH, borderType=cv2.BORDER_REPLICATE).reshape(x.shape)
    smooth[0], smooth[-1], smooth[:, 0], smooth[:, -1] = x[0], x[-1], x[:, 0], x[:, -1]
    return _blend(smooth, x, factor)


def _warp(x: np.ndarray, matrix: np.ndarray, interpolation: str, inverse: bool = True) -> np.ndarray:
    """Affine warp of every frame; `matrix` maps output to input pixels when `inverse`."""
    h, w = x.shape[:2]
    stacked = x.reshape(h, w, -1)
    flags = _CV2_INTERP[interpolation] | (cv2.WARP_INVERSE_MAP if inverse else 0)
    # OpenCV's bicubic warp takes at most four channels at a time.
    group = stacked.shape[2] if interpolation == "bilinear" else 4
    out = np.empty_like(stacked)
    for start in range(0, stacked.shape[2], group):
        part = np.ascontiguousarray(stacked[:, :, start:start + group])
        warped = cv2.warpAffine(part, matrix, (w, h), flags=flags, borderMode=cv2.BORDER_CONSTANT,
                                borderValue=(FILL,) * 4)
        out[:, :, start:start + group] = warped.reshape(h, w, -1)
    return out.reshape(x.shape)


def rotate(x: np.ndarray, degrees: float, interpolation: str) -> np.ndarray:
    """Counter-clockwise about the frame centre."""
    h, w = x.shape[:2]
    matrix = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), degrees, 1.0)
    return _warp(x, matrix, interpolation, inverse=False)


def shear_x(x: np.ndarray, factor: float, interpolation: str) -> np.ndarray:
    return _warp(x, np.array([[1, factor, 0.5 * factor], [0, 1, 0]], np.float64), interpolation)


def shear_y(x: np.ndarray, factor: float, interpolation: str) -> np.ndarray:
    return _warp(x, np.array([[1, 0, 0], [factor, 1, 0.5 * factor]], np.float64), interpolation)


def translate_x_rel(x: np.ndarray, fraction: float, interpolation: str) -> np.ndarray:
    return _warp(x, np.array([[1, 0, fraction * x.shape[1]], [0, 1, 0]], np.float64), interpolation)


def translate_y_rel(x: np.ndarray, fraction: float, interpolation: str) -> np.ndarray:
    return _warp(x, np.array([[1, 0, 0], [0, 1, fraction * x.shape[0]]], np.float64), interpolation)


_GEOMETRIC: Dict[str, Callable] = {"Rotate": rotate, "ShearX": shear_x, "ShearY": shear_y,
                                   "TranslateXRel": translate_x_rel, "TranslateYRel": translate_y_rel}
_LUMA_OPS: Dict[str, Callable] = {"Color": color, "Contrast": contrast}
_OTHER_OPS: Dict[str, Callable] = {"AutoContrast": auto_contrast, "Equalize": equalize, "Invert": invert,
                                   "Posterize": posterize, "Solarize": solarize, "SolarizeAdd": solarize_add,
                                   "Brightness": brightness, "Sharpness": sharpness}


class RandAugment:
    """Callable on a uint8 clip [3, T, H, W] (numpy), returning the augmented clip; draws
    from Python's and numpy's global generators (the datasets seed them per item)."""

    def __init__(self, policy: RandAugmentPolicy, interpolation: str = "bicubic", channel_order: str = "rgb"):
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation {interpolation!r}; expected one of {list(INTERPOLATIONS)}")
        self.policy, self.interpolation, self.rgb = policy, interpolation, channel_order == "rgb"
        self.transforms = INCREASING_TRANSFORMS if policy.increasing else TRANSFORMS
        self._weights = None
        if policy.weight_index is not None:
            weights = np.array([CHOICE_WEIGHTS_0[name.replace("Increasing", "")] for name in self.transforms])
            self._weights = weights / weights.sum()

    def draw(self) -> List[Tuple[str, tuple]]:
        """The operations and arguments for one clip, in PySlowFast's order of draws."""
        names = self.transforms
        chosen = np.random.choice(len(names), self.policy.num_layers, replace=self._weights is None,
                                  p=self._weights)
        ops = []
        for index in chosen:
            if random.random() > 0.5:
                continue
            magnitude = self.policy.magnitude
            if self.policy.magnitude_std > 0:
                magnitude = random.gauss(magnitude, self.policy.magnitude_std)
            magnitude = min(MAX_LEVEL, max(0.0, magnitude))
            name = names[index]
            args = _level_args(name, magnitude)
            if name in _GEOMETRIC:
                interpolation = (random.choice(("bilinear", "bicubic")) if self.interpolation == "random"
                                 else self.interpolation)
                args = args + (interpolation,)
            ops.append((name, args))
        return ops

    def apply(self, clip: np.ndarray, ops: Sequence[Tuple[str, tuple]]) -> np.ndarray:
        if not ops:
            return clip
        x = np.ascontiguousarray(clip.transpose(2, 3, 1, 0))  # [H, W, T, 3]
        for name, args in ops:
            base = name.replace("Increasing", "")
            if base in _GEOMETRIC:
                x = _GEOMETRIC[base](x, *args)
            elif base in _LUMA_OPS:
                x = _LUMA_OPS[base](x, *args, rgb=self.rgb)
            else:
                x = _OTHER_OPS[base](x, *args)
        return np.ascontiguousarray(x.transpose(3, 2, 0, 1))

    def __call__(self, clip: np.ndarray) -> np.ndarray:
        return self.apply(clip, self.draw())
