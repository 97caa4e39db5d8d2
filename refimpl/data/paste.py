"""Paste an object crop (a face, a cat, a person, anything) into a frame with a soft edge.

Reusable by every dataset that puts objects into scenes (the face frames here, issue 5's control
world): ``out = alpha * object + (1 - alpha) * frame`` inside the pasted box, where alpha is a
soft ellipse (or a mask you pass) resized with the object.
"""

from __future__ import annotations

import numpy as np


def soft_ellipse(height: int, width: int, *, feather: float = 0.2) -> np.ndarray:
    """(height, width) float32 alpha: 1 inside an inscribed ellipse, falling to 0 at its rim.

    ``feather`` is the width of the soft ramp as a fraction of the radius (0 = hard edge).
    """
    if height < 1 or width < 1:
        raise ValueError(f"height and width must be >= 1, got {height}x{width}")
    if not 0.0 <= feather < 1.0:
        raise ValueError(f"feather must be in [0, 1), got {feather}")
    yy = (np.arange(height) + 0.5) / height * 2.0 - 1.0
    xx = (np.arange(width) + 0.5) / width * 2.0 - 1.0
    r = np.sqrt(yy[:, None] ** 2 + xx[None, :] ** 2)  # (height, width), 1 on the ellipse
    if feather == 0.0:
        return (r <= 1.0).astype(np.float32)
    return np.clip((1.0 - r) / feather, 0.0, 1.0).astype(np.float32)


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """(C, h, w) or (h, w) -> (C, height, width) or (height, width), bicubic, float32 in [0, 1].

    Pillow's bicubic filter widens with the scale factor when shrinking, so downscaling is
    antialiased (and fast: this runs once per pasted object).
    """
    from PIL import Image

    img = np.asarray(image, dtype=np.float32)
    if img.ndim not in (2, 3):
        raise ValueError(f"image must be (C, h, w) or (h, w), got shape {img.shape}")
    if img.shape[-2:] == (height, width):
        return img.copy()
    planes = img if img.ndim == 3 else img[None]  # (C, h, w)
    out = np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(p), mode="F").resize(
        (width, height), Image.Resampling.BICUBIC)) for p in planes])  # (C, height, width)
    out = np.clip(out, 0.0, 1.0)
    return out if img.ndim == 3 else out[0]


def paste_object(frame: np.ndarray, obj: np.ndarray, *, top: int, left: int, height: int,
                 width: int, mask: np.ndarray | None = None, feather: float = 0.2) -> np.ndarray:
    """A copy of ``frame`` with ``obj`` resized to ``height x width`` and blended in at (top, left).

    frame: (C, H, W) float in [0, 1]. obj: (C', h, w) or (h, w) float in [0, 1]; a grey object
    is repeated over a colour frame, a colour object is averaged into a grey one. mask: optional
    (h, w) alpha in [0, 1] (default: :func:`soft_ellipse` with ``feather``). The box may hang
    over the frame's border; the part outside is dropped. The frame is not modified.
    """
    frame = np.asarray(frame)
    obj = np.asarray(obj, dtype=np.float32)
    if frame.ndim != 3:
        raise ValueError(f"frame must be (C, H, W), got shape {frame.shape}")
    if obj.ndim not in (2, 3):
        raise ValueError(f"obj must be (C, h, w) or (h, w), got shape {obj.shape}")
    if height < 1 or width < 1:
        raise ValueError(f"height and width must be >= 1, got {height}x{width}")
    c, fh, fw = frame.shape
    if obj.ndim == 2:
        obj = obj[None]  # (1, h, w)
    if obj.shape[0] != c:
        obj = obj.mean(axis=0, keepdims=True) if c == 1 else np.repeat(obj[:1], c, axis=0)
    if mask is None:
        alpha = soft_ellipse(height, width, feather=feather)
    else:
        mask = np.asarray(mask, dtype=np.float32)
        if mask.shape != obj.shape[1:]:
            raise ValueError(f"mask must have the object's shape {obj.shape[1:]}, got {mask.shape}")
        alpha = resize(mask, height, width)
    patch = resize(obj, height, width)  # (C, height, width)
    out = np.array(frame, dtype=np.float32, copy=True)
    y0, x0 = max(0, top), max(0, left)
    y1, x1 = min(fh, top + height), min(fw, left + width)
    if y0 >= y1 or x0 >= x1:
        return out
    a = alpha[y0 - top:y1 - top, x0 - left:x1 - left][None]  # (1, h', w')
    p = patch[:, y0 - top:y1 - top, x0 - left:x1 - left]
    out[:, y0:y1, x0:x1] = a * p + (1.0 - a) * out[:, y0:y1, x0:x1]
    return out
