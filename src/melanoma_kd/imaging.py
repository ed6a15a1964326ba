"""Small image helpers shared by the data stages: codecs, colour order and quality measures.

Images are RGB ``uint8`` arrays (H×W×3) everywhere in the package; OpenCV's BGR order stays
inside this module. Encoded images travel as raw bytes (JPEG in the ISIC-2024 HDF5 layout, PNG
in the lossless intermediate files).
"""

from __future__ import annotations

import cv2
import numpy as np
from numpy.typing import NDArray

from melanoma_kd.errors import UserError

PSNR_MAX_DB = 100.0  # PSNR reported for identical images, so metrics stay finite JSON numbers
PNG_COMPRESSION = 3  # fixed zlib level: PNG bytes are a pure function of the pixels
MIN_SIDE = 8  # px: a smaller decoded image is refused (no lesion fits in it)


def rgb_to_bgr(image: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """Swap RGB <-> BGR (the operation is its own inverse)."""
    return np.ascontiguousarray(image[..., ::-1])


bgr_to_rgb = rgb_to_bgr


def encode_jpeg(rgb: NDArray[np.uint8], quality: int = 92) -> bytes:
    """Encode an RGB image as baseline JPEG bytes."""
    ok, buf = cv2.imencode(".jpg", rgb_to_bgr(rgb), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


def encode_png(rgb: NDArray[np.uint8]) -> bytes:
    """Encode an RGB (H×W×3) or grayscale (H×W) image as lossless PNG bytes."""
    image = rgb_to_bgr(rgb) if rgb.ndim == 3 else rgb
    ok, buf = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION])
    if not ok:
        raise ValueError("PNG encoding failed")
    return buf.tobytes()


def as_byte_array(raw: object) -> NDArray[np.uint8]:
    """View encoded-image bytes as a 1-D ``uint8`` array.

    Accepts what HDF5 readers hand back for an encoded image: ``bytes``/``numpy.bytes_`` (a
    fixed-length string scalar, as in the ISIC-2024 file), ``numpy.void`` (an opaque scalar) or a
    ``uint8`` array (a variable-length element).
    """
    if isinstance(raw, np.void):
        raw = raw.tobytes()
    if isinstance(raw, (bytes, bytearray, memoryview)):
        return np.frombuffer(raw, dtype=np.uint8)
    if isinstance(raw, np.ndarray):
        if raw.dtype == np.uint8:
            return raw.reshape(-1)
        if raw.dtype.kind in "SV":
            return np.frombuffer(raw.tobytes(), dtype=np.uint8)
    raise TypeError(f"cannot read encoded image bytes from {type(raw).__name__}")


def decode_image(raw: object, name: str = "image") -> NDArray[np.uint8]:
    """Decode encoded image bytes (JPEG, PNG, ... as OpenCV reads them) to RGB ``uint8`` H×W×3.

    The one image decoder of the package: the data sources, the hair-removed and generated
    stores, the transfer folder and ``predict`` all read through it. An undecodable payload or
    an image under :data:`MIN_SIDE` pixels is a :class:`UserError` naming ``name``.
    """
    try:
        buf = as_byte_array(raw)
    except TypeError as exc:
        raise UserError(f"{name}: {exc}") from None
    image = cv2.imdecode(buf, cv2.IMREAD_COLOR) if buf.size else None
    if image is None or image.ndim != 3 or image.shape[2] != 3:
        raise UserError(f"{name}: corrupt or unreadable image ({buf.size} bytes)")
    if min(image.shape[:2]) < MIN_SIDE:
        h, w = image.shape[:2]
        raise UserError(f"{name}: image too small ({w}x{h}; need >= {MIN_SIDE}x{MIN_SIDE})")
    return bgr_to_rgb(image)


def psnr(a: NDArray[np.uint8], b: NDArray[np.uint8], data_range: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB; :data:`PSNR_MAX_DB` when the images are identical."""
    return psnr_from_mse(mse(a, b), data_range)


def mse(a: NDArray[np.uint8], b: NDArray[np.uint8]) -> float:
    """Mean squared error over all pixels and channels."""
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch: {a.shape} vs {b.shape}")
    diff = a.astype(np.float64) - b.astype(np.float64)
    return float(np.mean(diff * diff))


def psnr_from_mse(err: float, data_range: float = 255.0) -> float:
    """PSNR in dB of a mean squared error, capped at :data:`PSNR_MAX_DB`."""
    if err <= 0.0:
        return PSNR_MAX_DB
    return float(min(PSNR_MAX_DB, 10.0 * np.log10(data_range * data_range / err)))


def ssim(a: NDArray[np.uint8], b: NDArray[np.uint8], data_range: float = 255.0) -> float:
    """Structural similarity (Wang et al. 2004: 11×11 Gaussian window, sigma 1.5, K1=0.01,
    K2=0.03), averaged over the image and, for colour images, over channels."""
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch: {a.shape} vs {b.shape}")
    x = a.astype(np.float64)
    y = b.astype(np.float64)
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2

    def blur(img: NDArray[np.float64]) -> NDArray[np.float64]:
        return cv2.GaussianBlur(img, (11, 11), 1.5, borderType=cv2.BORDER_REFLECT)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x * mu_x
    var_y = blur(y * y) - mu_y * mu_y
    cov = blur(x * y) - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    den = (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)
    return float(np.mean(num / den))
