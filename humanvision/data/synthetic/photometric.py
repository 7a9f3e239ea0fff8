"""Image-formation effects for synthetic frames: what a consumer camera or a video codec does to a picture.

The renderer produces a perfectly sharp, noise-free, ideally exposed image; real photos and video frames are
none of those. :func:`apply_effects` degrades a rendered frame in image space only, so every label (2D / 3D
keypoints, visibility, part and instance maps, depth) stays exact. The chain follows the order in which a camera
forms an image:

1. **vignetting** (optics): brightness falls off towards the corners, ``1 - s * r^2`` with ``r`` the distance
   from the image centre normalised by the half diagonal (1 at the corners);
2. **defocus blur** (optics): an isotropic Gaussian of standard deviation ``sigma`` pixels;
3. **motion blur** (exposure time): a line kernel of ``length`` pixels in a random direction (camera shake or
   subject motion);
4. **exposure and white balance** (sensor gain, auto white balance): a global gain ``2^EV`` and per-channel gains;
5. **sensor noise**: zero-mean, approximately Gaussian noise (a triangular distribution, much cheaper to draw) of
   standard deviation ``std`` (in [0, 1] units), a mixture of a luminance part (shared by the three channels) and
   an independent chroma part;
6. **tone curve**: a global gamma;
7. **JPEG re-encoding** (storage / streaming): encode and decode with OpenCV at a random quality;
8. **monochrome** (black-and-white photographs, night and infrared cameras): the picture's luma (ITU-R BT.601
   weights) in all three channels. Off by default; its decision is drawn after every other draw, so turning it on
   leaves the other effects as they were.

Each step fires with its own probability; with every probability at 0 the image is returned unchanged. All random
draws come from the generator passed in, so the output is a function of the image and the generator state.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np

from humanvision.errors import ConfigError, DataError

__all__ = ["ImageEffects", "apply_effects"]


@dataclass
class ImageEffects:
    """Probabilities and ranges of the effects of :func:`apply_effects` (ranges are inclusive ``(min, max)``).

    Defaults look like consumer photos and video frames: most frames get a little noise and JPEG compression,
    some are slightly soft or shaken, few are strongly degraded.

    Attributes:
        vignette_prob, vignette_strength: fall-off ``s`` at the corners (0.3 = corners 30 % darker).
        blur_prob, blur_sigma: Gaussian defocus blur, sigma in pixels.
        motion_blur_prob, motion_blur_length: line kernel length in pixels (random angle).
        exposure_prob, exposure_ev: global gain ``2^ev``.
        white_balance_prob, white_balance: per-channel gains drawn in ``1 +- white_balance``.
        noise_prob, noise_std: Gaussian sensor noise, standard deviation in [0, 1] units.
        noise_luma: fraction of the noise variance shared by the three channels (1: grey noise, 0: independent
            per channel, like raw chroma noise).
        gamma_prob, gamma: tone-curve exponent range (``out = in ** gamma``).
        jpeg_prob, jpeg_quality: JPEG re-encoding at an integer quality in the range.
        monochrome_prob: the picture turned grey (COCO holds a few percent of black-and-white photos).
    """

    vignette_prob: float = 0.3
    vignette_strength: tuple[float, float] = (0.1, 0.4)
    blur_prob: float = 0.2
    blur_sigma: tuple[float, float] = (0.4, 1.3)
    motion_blur_prob: float = 0.1
    motion_blur_length: tuple[float, float] = (3.0, 9.0)
    exposure_prob: float = 0.7
    exposure_ev: tuple[float, float] = (-0.5, 0.4)
    white_balance_prob: float = 0.5
    white_balance: float = 0.08
    noise_prob: float = 0.6
    noise_std: tuple[float, float] = (0.004, 0.03)
    noise_luma: float = 0.7
    gamma_prob: float = 0.5
    gamma: tuple[float, float] = (0.8, 1.25)
    jpeg_prob: float = 0.6
    jpeg_quality: tuple[int, int] = (40, 95)
    monochrome_prob: float = 0.0

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if name.endswith("_prob") and not 0.0 <= float(value) <= 1.0:
                raise ConfigError(f"ImageEffects.{name} must be a probability in [0, 1], got {value}")
            if isinstance(value, tuple) and not (len(value) == 2 and value[0] <= value[1]
                                                 and (value[0] >= 0 or name == "exposure_ev")):
                raise ConfigError(f"ImageEffects.{name} must be a range (min, max) with min <= max (and >= 0 "
                                  f"except exposure_ev), got {value}")
        if not 1 <= self.jpeg_quality[0] <= self.jpeg_quality[1] <= 100:
            raise ConfigError(f"ImageEffects.jpeg_quality must be within 1..100, got {self.jpeg_quality}")
        if not 0.0 <= self.noise_luma <= 1.0 or not 0.0 <= self.white_balance < 1.0:
            raise ConfigError(f"ImageEffects.noise_luma must be in [0, 1] and white_balance in [0, 1), got "
                              f"{self.noise_luma}, {self.white_balance}")

    @staticmethod
    def none() -> ImageEffects:
        """Every probability 0: :func:`apply_effects` returns the image unchanged."""
        return ImageEffects(vignette_prob=0.0, blur_prob=0.0, motion_blur_prob=0.0, exposure_prob=0.0,
                            white_balance_prob=0.0, noise_prob=0.0, gamma_prob=0.0, jpeg_prob=0.0)


def _motion_kernel(length: float, angle: float) -> np.ndarray:
    """A normalised line kernel of ``length`` pixels at ``angle`` radians (anti-aliased by supersampling)."""
    n = int(np.ceil(length)) | 1  # odd size
    c = n // 2
    ker = np.zeros((n, n), np.float32)
    s = np.linspace(-0.5 * (length - 1), 0.5 * (length - 1), 4 * n)
    x, y = c + s * np.cos(angle), c + s * np.sin(angle)
    np.add.at(ker, (np.clip(np.rint(y), 0, n - 1).astype(int), np.clip(np.rint(x), 0, n - 1).astype(int)), 1.0)
    return ker / ker.sum()


@functools.lru_cache(maxsize=8)
def _radius2(h: int, w: int) -> np.ndarray:
    """``(H, W, 1)`` squared distance to the image centre over the squared half diagonal (1 at the corner pixels'
    centres; read-only)."""
    y = (np.arange(h, dtype=np.float32) - 0.5 * (h - 1))[:, None]
    x = (np.arange(w, dtype=np.float32) - 0.5 * (w - 1))[None, :]
    r2 = ((x * x + y * y) / np.float32(max(0.25 * ((h - 1) ** 2 + (w - 1) ** 2), 1.0)))[..., None]
    r2.setflags(write=False)
    return r2


def _noise(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Zero-mean, unit-variance noise, approximately Gaussian: the sum of two uniform bytes (a triangular
    distribution), about 4x faster than ``standard_normal``."""
    n = int(np.prod(shape))
    b = np.frombuffer(rng.bytes(2 * n), dtype=np.uint8).reshape((2, *shape))
    return (b[0].astype(np.float32) + b[1] - np.float32(255.0)) * np.float32(1.0 / np.sqrt(2 * (256**2 - 1) / 12))


def apply_effects(rgb: np.ndarray, rng: np.random.Generator, effects: ImageEffects) -> np.ndarray:
    """Degrade an ``(H, W, 3)`` float image in [0, 1] like a real camera (see the module docstring).

    Returns a new ``(H, W, 3)`` float32 array in [0, 1]; deterministic given ``rng``'s state. Only pixel values
    change (no geometric effect), so labels of the frame stay valid.
    """
    img = np.array(rgb, dtype=np.float32, copy=True)
    if img.ndim != 3 or img.shape[2] != 3:
        raise DataError(f"apply_effects expects an (H, W, 3) image, got shape {img.shape}", field="rgb")
    e = effects
    H, W = img.shape[:2]
    u = rng.uniform(size=8)  # all the decisions first: enabling one effect never changes which others fire
    if u[0] < e.vignette_prob:
        img *= np.float32(1.0) - np.float32(rng.uniform(*e.vignette_strength)) * _radius2(H, W)
    if u[1] < e.blur_prob:
        sigma = float(rng.uniform(*e.blur_sigma))
        img = cv2.GaussianBlur(img, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)
    if u[2] < e.motion_blur_prob:
        ker = _motion_kernel(float(rng.uniform(*e.motion_blur_length)), float(rng.uniform(0, np.pi)))
        img = cv2.filter2D(img, -1, ker, borderType=cv2.BORDER_REFLECT)
    gain = np.ones(3)
    if u[3] < e.exposure_prob:
        gain *= 2.0 ** rng.uniform(*e.exposure_ev)
    if u[4] < e.white_balance_prob:
        gain *= 1.0 + rng.uniform(-e.white_balance, e.white_balance, 3)
    if u[3] < e.exposure_prob or u[4] < e.white_balance_prob:
        img *= gain.astype(np.float32)
    if u[5] < e.noise_prob:
        std = float(rng.uniform(*e.noise_std))
        luma = float(np.clip(e.noise_luma, 0.0, 1.0))
        if luma > 0:
            img += _noise(rng, (H, W, 1)) * np.float32(std * np.sqrt(luma))
        if luma < 1:
            img += _noise(rng, (H, W, 3)) * np.float32(std * np.sqrt(1.0 - luma))
    np.clip(img, 0.0, 1.0, out=img)
    if u[6] < e.gamma_prob:
        img = np.power(img, np.float32(rng.uniform(*e.gamma)), dtype=np.float32)
    if u[7] < e.jpeg_prob:
        q = int(rng.integers(int(e.jpeg_quality[0]), int(e.jpeg_quality[1]) + 1))
        u8 = np.clip(img[..., ::-1] * 255.0 + 0.5, 0, 255).astype(np.uint8)  # RGB -> BGR, as OpenCV expects
        ok, buf = cv2.imencode(".jpg", u8, [cv2.IMWRITE_JPEG_QUALITY, q])
        if ok:
            img = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1].astype(np.float32) * np.float32(1.0 / 255.0)
    if e.monochrome_prob > 0 and rng.uniform() < e.monochrome_prob:  # drawn last: the draws above stay in place
        img = np.repeat(cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)
    return np.ascontiguousarray(img)
