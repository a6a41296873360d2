"""RandAugment for video clips (AUG.AA_TYPE, AUG.INTERPOLATION), with PySlowFast's policy
(the grammar: vov3d/utils/augment_policy.py). Without `w` the operations are chosen
uniformly with replacement; with `w0` by its weights, without replacement.

Per clip, `n` operations are drawn (numpy's generator), and each is applied with
probability 0.5 with a magnitude drawn once (Python's generator): every frame of the clip
gets the same operations with the same arguments, so the clip stays temporally
consistent. Operations that measure the image (AutoContrast, Equalize, Contrast) measure
each frame, as PIL does for each frame of a list.

The frames of a clip are one array [T, H, W, 3] uint8 (the datasets crop into it and split
it into the channel-first clip once; no transposes). Operations that treat every pixel alike
(Invert, Posterize, Solarize, SolarizeAdd, Brightness, Color, Sharpness) are one OpenCV call
over the clip seen as a tall image [T*H, W, 3]; the per-frame tables of AutoContrast,
Equalize and Contrast and the warps are one OpenCV call per frame (OpenCV's bicubic warp
takes at most four channels), never Python over pixels. Results equal PIL's on every frame,
except Color and Sharpness blending (OpenCV rounds where PIL truncates: within one level)
and the rotation and shear kernels (OpenCV's fixed-point interpolation).

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
# Each takes and returns the frames of a clip, [T, H, W, 3] uint8 contiguous; viewed as one
# tall image [T*H, W, 3], an operation that treats every pixel alike is one OpenCV call.
def _tall(x: np.ndarray) -> np.ndarray:
    return x.reshape(-1, x.shape[2], x.shape[3])


def _same_lut(x: np.ndarray, lut: np.ndarray) -> np.ndarray:
    return cv2.LUT(_tall(x), np.asarray(lut, dtype=np.uint8)).reshape(x.shape)


def _lut_per_frame(x: np.ndarray, luts: np.ndarray) -> np.ndarray:
    """Frame t through its own per-channel table luts[t] ([T, 256, 3]): tables that depend
    on the frame's content, as PIL measures every image of a list."""
    out = np.empty_like(x)
    tables = np.ascontiguousarray(np.clip(luts, 0, 255).astype(np.uint8)[:, :, None, :])  # [T, 256, 1, 3]
    for t in range(x.shape[0]):
        cv2.LUT(x[t], tables[t], dst=out[t])
    return out


_LEVELS = np.arange(256, dtype=np.float64)


def _histograms(x: np.ndarray) -> np.ndarray:
    """[T, 256, 3] int64: the histogram of each channel of each frame."""
    return np.stack([np.stack([cv2.calcHist([frame], [c], None, [256], [0, 256]).reshape(256) for c in range(3)],
                              axis=1) for frame in x]).astype(np.int64)


def auto_contrast(x: np.ndarray) -> np.ndarray:
    """Each channel of each frame stretched so its darkest value becomes 0, its brightest 255."""
    present = _histograms(x) > 0
    lo = np.argmax(present, axis=1).astype(np.float64)[:, None, :]  # [T, 1, 3]
    hi = (255 - np.argmax(present[:, ::-1, :], axis=1)).astype(np.float64)[:, None, :]
    flat = hi <= lo
    scale = 255.0 / np.where(flat, 1.0, hi - lo)
    luts = np.trunc(_LEVELS[None, :, None] * scale - lo * scale)
    return _lut_per_frame(x, np.where(flat, _LEVELS[None, :, None], luts))


def equalize(x: np.ndarray) -> np.ndarray:
    """Histogram equalisation of each channel of each frame, with PIL's rounding and its
    identity cases."""
    pixels = x.shape[1] * x.shape[2]
    hist = _histograms(x)
    brightest = 255 - np.argmax(hist[:, ::-1, :] > 0, axis=1)  # [T, 3]
    step = (pixels - np.take_along_axis(hist, brightest[:, None, :], axis=1)[:, 0, :]) // 255
    before = np.cumsum(hist, axis=1) - hist
    safe = np.maximum(step, 1)[:, None, :]
    luts = np.minimum((safe // 2 + before) // safe, 255)
    return _lut_per_frame(x, np.where(step[:, None, :] > 0, luts, _LEVELS[None, :, None]))


def invert(x: np.ndarray) -> np.ndarray:
    return _same_lut(x, 255 - _LEVELS)


def posterize(x: np.ndarray, bits: int) -> np.ndarray:
    if bits >= 8:
        return x
    return _same_lut(x, _LEVELS.astype(np.int64) & ((0xFF << (8 - bits)) & 0xFF))


def solarize(x: np.ndarray, threshold: int) -> np.ndarray:
    return _same_lut(x, np.where(_LEVELS < threshold, _LEVELS, 255 - _LEVELS))


def solarize_add(x: np.ndarray, add: int, threshold: int = 128) -> np.ndarray:
    return _same_lut(x, np.where(_LEVELS < threshold, np.minimum(_LEVELS + add, 255), _LEVELS))


def _blend_table(degenerate, factor: float) -> np.ndarray:
    """PIL's blend of a constant `degenerate` with every level: clipped and truncated."""
    return np.trunc(np.clip(degenerate + factor * (_LEVELS - degenerate), 0, 255))


def brightness(x: np.ndarray, factor: float) -> np.ndarray:
    return _same_lut(x, _blend_table(0.0, factor))


def _luma_weights(rgb: bool) -> np.ndarray:
    weights = np.array(_LUMA_RGB, np.float64) / 65536.0
    return weights if rgb else weights[::-1]


def contrast(x: np.ndarray, factor: float, rgb: bool = True) -> np.ndarray:
    """Blend with each frame's mean grey level (rounded, as PIL's)."""
    hist = _histograms(x)
    means = (hist * _LEVELS[None, :, None]).sum(axis=1) / hist.sum(axis=1) @ _luma_weights(rgb)  # [T]
    tables = _blend_table(np.floor(means + 0.5)[:, None], factor)  # [T, 256]
    return _lut_per_frame(x, np.repeat(tables[:, :, None], 3, axis=2))


def color(x: np.ndarray, factor: float, rgb: bool = True) -> np.ndarray:
    """Blend with the grey version of each pixel: out = factor x + (1 - factor) grey, one
    channel-mixing matrix over the whole clip (rounded where PIL truncates: within 1 level)."""
    mix = factor * np.eye(3) + (1.0 - factor) * np.tile(_luma_weights(rgb), (3, 1))
    return cv2.transform(_tall(x), mix.astype(np.float32)).reshape(x.shape)


_SMOOTH = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], np.float32) / 13.0


def sharpness(x: np.ndarray, factor: float) -> np.ndarray:
    """Blend with PIL's SMOOTH filter of every frame, whose border pixels are the frame's own
    (so filtering the tall image, across frame seams, changes nothing kept)."""
    smooth = cv2.filter2D(_tall(x), -1, _SMOOTH, borderType=cv2.BORDER_REPLICATE).reshape(x.shape)
    smooth[:, 0], smooth[:, -1], smooth[:, :, 0], smooth[:, :, -1] = x[:, 0], x[:, -1], x[:, :, 0], x[:, :, -1]
    return cv2.addWeighted(_tall(x), factor, _tall(smooth), 1.0 - factor, 0.0).reshape(x.shape)


def _warp(x: np.ndarray, matrix: np.ndarray, interpolation: str, inverse: bool = True) -> np.ndarray:
    """The same affine warp of every frame; `matrix` maps output to input pixels when
    `inverse`. One OpenCV call per frame: its bicubic warp takes at most four channels."""
    h, w = x.shape[1:3]
    flags = _CV2_INTERP[interpolation] | (cv2.WARP_INVERSE_MAP if inverse else 0)
    out = np.empty_like(x)
    for t in range(x.shape[0]):
        cv2.warpAffine(x[t], matrix, (w, h), dst=out[t], flags=flags, borderMode=cv2.BORDER_CONSTANT,
                       borderValue=(FILL,) * 3)
    return out


def rotate(x: np.ndarray, degrees: float, interpolation: str) -> np.ndarray:
    """Counter-clockwise about the frame centre."""
    h, w = x.shape[1:3]
    matrix = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), degrees, 1.0)
    return _warp(x, matrix, interpolation, inverse=False)


def shear_x(x: np.ndarray, factor: float, interpolation: str) -> np.ndarray:
    return _warp(x, np.array([[1, factor, 0.5 * factor], [0, 1, 0]], np.float64), interpolation)


def shear_y(x: np.ndarray, factor: float, interpolation: str) -> np.ndarray:
    return _warp(x, np.array([[1, 0, 0], [factor, 1, 0.5 * factor]], np.float64), interpolation)


def translate_x_rel(x: np.ndarray, fraction: float, interpolation: str) -> np.ndarray:
    return _warp(x, np.array([[1, 0, fraction * x.shape[2]], [0, 1, 0]], np.float64), interpolation)


def translate_y_rel(x: np.ndarray, fraction: float, interpolation: str) -> np.ndarray:
    return _warp(x, np.array([[1, 0, 0], [0, 1, fraction * x.shape[1]]], np.float64), interpolation)


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

    def apply_frames(self, frames: np.ndarray, ops: Sequence[Tuple[str, tuple]]) -> np.ndarray:
        """`ops` on the frames of a clip, [T, H, W, 3] uint8 (contiguous)."""
        for name, args in ops:
            base = name.replace("Increasing", "")
            if base in _GEOMETRIC:
                frames = _GEOMETRIC[base](frames, *args)
            elif base in _LUMA_OPS:
                frames = _LUMA_OPS[base](frames, *args, rgb=self.rgb)
            else:
                frames = _OTHER_OPS[base](frames, *args)
        return frames

    def apply(self, clip: np.ndarray, ops: Sequence[Tuple[str, tuple]]) -> np.ndarray:
        """`ops` on a clip [3, T, H, W] uint8."""
        if not ops:
            return clip
        frames = np.ascontiguousarray(clip.transpose(1, 2, 3, 0))
        return np.ascontiguousarray(self.apply_frames(frames, ops).transpose(3, 0, 1, 2))

    def __call__(self, clip: np.ndarray) -> np.ndarray:
        return self.apply(clip, self.draw())
