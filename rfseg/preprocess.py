"""Preprocessing as pure functions over 2-D float arrays (rows, cols). Pixel sizes are in nm/px."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from rfseg.errors import UserError

_NEIGHBOURS = np.array([[1, 1, 1], [1, 0, 1], [1, 1, 1]], np.float32) / 8.0


def remove_xrays(image: np.ndarray, threshold: float, passes: int = 2) -> np.ndarray:
    """Replace pixels brighter than ``median + threshold`` by the mean of their 8 neighbours.

    ``threshold`` is in the image's raw units (detector counts); each pass re-evaluates the median. Vectorised: a
    4096 x 4096 image takes a fraction of a second. Returns a new float32 array.
    """
    out = np.asarray(image, np.float32).copy()
    for _ in range(passes):
        hot = out > np.median(out) + threshold
        if not hot.any():
            break
        out[hot] = ndimage.convolve(out, _NEIGHBOURS, mode="reflect")[hot]
    return out


def flat_field(image: np.ndarray, sigma_px: float) -> np.ndarray:
    """Divide by a Gaussian blur of width ``sigma_px`` (px) to remove slow illumination or thickness variation."""
    image = np.asarray(image, np.float32)
    background = ndimage.gaussian_filter(image, sigma_px, mode="reflect")
    if (background <= 0).any():
        raise UserError("flat-field correction needs positive intensities: leave flat_field_sigma_nm unset for "
                        "data that are not raw intensities")
    return image / background


def standardise(image: np.ndarray) -> np.ndarray:
    """Per-image standardisation to mean 0 and standard deviation 1 (float32)."""
    image = np.asarray(image, np.float64)
    std = image.std()
    if not std > 0:
        raise UserError("the image is constant: it carries no information to segment")
    return ((image - image.mean()) / std).astype(np.float32)


def resample(image: np.ndarray, pixel_size_nm: tuple[float, float], target_nm: float, is_mask: bool = False):
    """Resample to square pixels of ``target_nm`` nm. Images: linear with anti-aliasing; masks: nearest."""
    from skimage.transform import resize

    py, px = pixel_size_nm
    shape = (max(1, round(image.shape[0] * py / target_nm)), max(1, round(image.shape[1] * px / target_nm)))
    if shape == image.shape:
        return image
    if is_mask:
        return resize(image.astype(np.uint8), shape, order=0, preserve_range=True, anti_aliasing=False).astype(bool)
    return resize(image, shape, order=1, preserve_range=True,
                  anti_aliasing=target_nm > min(py, px)).astype(np.float32)


def preprocess(image: np.ndarray, mask: np.ndarray, pixel_size_nm, *, xray_threshold=None, xray_passes=2,
               flat_field_sigma_nm=None, target_pixel_size_nm=None):
    """The training preprocessing of one micrograph, in the order the paper uses.

    X-ray removal (raw units), optional flat field, optional resampling, standardisation. Returns
    (image float32, mask bool, pixel size nm/px). The same function runs at prediction time.
    ``pixel_size_nm`` None (uncalibrated data) allows only the steps that need no length in nm."""
    if xray_threshold is not None:
        image = remove_xrays(image, xray_threshold, xray_passes)
    if pixel_size_nm is None:
        if flat_field_sigma_nm or target_pixel_size_nm:
            raise UserError("flat_field_sigma_nm and target_pixel_size_nm need a pixel size, and these data are "
                            "uncalibrated: give pixel_size_nm or leave both unset")
        return standardise(image), mask, None
    py, px = pixel_size_nm
    if flat_field_sigma_nm:
        image = flat_field(image, flat_field_sigma_nm / ((py + px) / 2))
    if target_pixel_size_nm:
        image = resample(image, (py, px), target_pixel_size_nm)
        if mask is not None:
            mask = resample(mask, (py, px), target_pixel_size_nm, is_mask=True)
        size = float(target_pixel_size_nm)
    else:
        if not np.isclose(py, px, rtol=1e-4):
            raise UserError(f"pixels are not square ({py:g} x {px:g} nm): set target_pixel_size_nm to resample")
        size = float(px)
    return standardise(image), mask, size
