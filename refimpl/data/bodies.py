"""Human bodies: pedestrians cropped by OpenCV's HOG people detector from ``vtest.avi``.

``vtest.avi`` ships in Debian's opencv-doc (795 frames, 768x576, one street, ~10 people). Each
detection becomes a square crop centred on the person, its side :data:`MARGIN` times the box
height, kept inside the frame. All frames give ~2k crops of the same ~10 people: a small,
correlated sample; say so wherever bodies are used (the datasets' ``note`` does).
"""

from __future__ import annotations

import os

import numpy as np

from .readers import read_video
from .sources import get_source

MARGIN = 1.2  # [ours] crop side / detected box height
CROP_SIDE = 96  # [ours] stored crop side in pixels; callers resize to their model's input
MIN_WEIGHT = 0.5  # [ours] HOG SVM score below which a detection is dropped


def body_crops(*, step: int = 1, max_frames: int | None = None, progress: bool = False) -> np.ndarray:
    """Pedestrian crops (M, 3, CROP_SIDE, CROP_SIDE) float32 in [0, 1], in video order.

    step: use every ``step``-th video frame; max_frames: stop after that many used frames.
    The full video (step 1) takes ~4 minutes of HOG on 2 cores: cache it
    (:func:`refimpl.data.datasets.load`).
    """
    if step < 1:
        raise ValueError(f"step must be >= 1, got {step}")
    get_source("opencv").require()
    (path,) = get_source("opencv-doc").require()
    import cv2
    from PIL import Image

    hog = cv2.HOGDescriptor()
    hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
    video = read_video(os.fspath(path), step=step, max_frames=max_frames)  # (N, H, W, 3)
    frames = video
    if progress:
        from tqdm import tqdm
        frames = tqdm(video, desc="HOG people detector", unit="frame")
    crops = []
    for frame in frames:
        boxes, weights = hog.detectMultiScale(np.ascontiguousarray(frame[:, :, ::-1]),
                                              winStride=(8, 8), padding=(8, 8), scale=1.05)
        fh, fw = frame.shape[:2]
        for (x, y, w, h), wt in zip(np.reshape(boxes, (-1, 4)), np.ravel(weights)):
            if wt < MIN_WEIGHT:
                continue
            side = min(int(MARGIN * h), fh, fw)
            top = int(np.clip(y + h / 2 - side / 2, 0, fh - side))
            left = int(np.clip(x + w / 2 - side / 2, 0, fw - side))
            crop = Image.fromarray(np.ascontiguousarray(frame[top:top + side, left:left + side]))
            crop = np.asarray(crop.resize((CROP_SIDE, CROP_SIDE), Image.Resampling.LANCZOS))
            crops.append(crop.astype(np.float32).transpose(2, 0, 1) / 255.0)  # (3, S, S)
    if not crops:
        return np.zeros((0, 3, CROP_SIDE, CROP_SIDE), np.float32)
    return np.stack(crops)

