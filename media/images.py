"""Pixels of still images: decoding (Pillow), resizing and encoding (OpenCV).

`decode_image`: Pillow, first frame of animations (GIF, WebP), EXIF orientation applied,
converted to RGB (transparency composited on white, as Keye's processor does; 16-bit
scaled to 8-bit), pixel cap checked from the header before any pixel is decoded.
`encode_jpeg` / `encode_png` write the members of the shards; `resize_rgb` is the image
path's scaler (video frames are scaled by swscale while decoding).
"""
from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np

from media.errors import MediaError
from schemas.reasons import Reason


LOSSLESS_IMAGE_FORMATS = {"PNG", "GIF", "BMP", "TIFF", "PPM", "TGA", "ICO", "QOI"}


@dataclass
class DecodedImage:
    rgb: np.ndarray
    format: str             # Pillow's format name: JPEG, PNG, WEBP, GIF, ...
    lossless: bool          # the source format is lossless (re-encode as PNG, not JPEG)


def decode_image(data: bytes, max_pixels: int) -> DecodedImage:
    """RGB uint8 (h, w, 3): first frame, EXIF orientation applied; MediaError if unusable."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            im = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            raise MediaError(Reason.NOT_AN_IMAGE, "no image format Pillow knows") from None
        except Image.DecompressionBombError as e:
            raise MediaError(Reason.TOO_MANY_PIXELS, str(e)) from None
        except Exception as e:  # noqa: BLE001 - header parse errors of the plugins
            raise MediaError(Reason.UNDECODABLE, f"{type(e).__name__}: {e}") from None
        with im:
            fmt = im.format or "?"
            w, h = im.size
            if w * h > max_pixels:
                raise MediaError(Reason.TOO_MANY_PIXELS, f"{w}x{h} {fmt} > {max_pixels} pixels")
            try:
                im.seek(0)
                im.load()
            except OSError as e:
                if "truncated" in str(e).lower():
                    raise MediaError(Reason.TRUNCATED_MEDIA, f"{fmt}: {e}") from None
                raise MediaError(Reason.UNDECODABLE, f"{fmt}: {e}") from None
            except Exception as e:  # noqa: BLE001
                raise MediaError(Reason.UNDECODABLE, f"{fmt}: {type(e).__name__}: {e}") from None
            im = ImageOps.exif_transpose(im)
            rgb = _to_rgb(im)
    return DecodedImage(rgb=rgb, format=fmt, lossless=fmt in LOSSLESS_IMAGE_FORMATS)


def _to_rgb(im) -> np.ndarray:
    from PIL import Image

    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        a = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or a.max() > 255 else 255.0
        im = Image.fromarray(np.clip(a * (255.0 / top), 0, 255).round().astype(np.uint8), "L")
    elif im.mode == "F":
        im = Image.fromarray(np.clip(np.asarray(im), 0, 255).astype(np.uint8), "L")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, im)
    return np.asarray(im.convert("RGB"))


def encode_jpeg(rgb: np.ndarray, quality: int) -> bytes:
    """Baseline JPEG, 4:2:0 (OpenCV's libjpeg-turbo: ~30% faster than Pillow here)."""
    import cv2

    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def encode_png(rgb: np.ndarray) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def resize_rgb(rgb: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Area-average down, bicubic up (the image path; video frames are scaled by swscale)."""
    import cv2

    h, w = size_hw
    if rgb.shape[:2] == (h, w):
        return rgb
    interp = cv2.INTER_AREA if rgb.shape[0] * rgb.shape[1] >= h * w else cv2.INTER_CUBIC
    return np.ascontiguousarray(cv2.resize(rgb, (w, h), interpolation=interp))
