"""Preprocessing as pure functions over 2-D float arrays (rows, cols). Pixel sizes are in nm/px.

A :class:`Recipe` names the steps one dataset (or one published network) had, in the order they run: x-ray removal
on raw counts, an optional flat field (a Gaussian blur, or the Bézier surface of the published real-data networks),
optional resampling to a target pixel size, then standardisation of the whole micrograph to mean 0, std 1. The same
recipe runs at training and at prediction time; model bundles record it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from math import comb

import numpy as np
from scipy import ndimage

from rfseg.errors import UserError, check_choice

_NEIGHBOURS = np.array([[1, 1, 1], [1, 0, 1], [1, 1, 1]], np.float32) / 8.0
FLAT_FIELDS = ("none", "gaussian", "bezier")
#: resampling beyond these factors is refused: it means a wrong pixel size far more often than a wanted result
MAX_UPSAMPLING, MAX_DOWNSAMPLING = 4.0, 32.0


class RecipeError(UserError):
    """A micrograph that a recipe cannot prepare. ``topic`` says what about it ("flat_field", "pixel_size",
    "constant"); the fix given is that of ``rfseg preprocess``, and a caller whose user cannot change the recipe
    (predict: it is the models') gives its own."""

    def __init__(self, problem: str, fix: str | None, topic: str):
        super().__init__(problem, fix)
        self.topic = topic


@dataclass(frozen=True)
class Recipe:
    """The preprocessing of one dataset.

    Attributes
    ----------
    xray_threshold : float or None
        Remove pixels above median + this, in raw units (detector counts); None skips the step.
    xray_passes : int
        Passes of x-ray removal (the paper: 2).
    flat_field : {"none", "gaussian", "bezier"}
        "gaussian" divides by a Gaussian blur of ``flat_field_sigma_nm``; "bezier" by the published networks'
        degree-2x2 Bézier surface (:func:`bezier_flat_field`).
    flat_field_sigma_nm : float or None
        Width of the Gaussian flat field, nm.
    target_pixel_size_nm : float or None
        Resample to this pixel size (nm/px); None keeps the micrograph's own.
    """

    xray_threshold: float | None = None
    xray_passes: int = 2
    flat_field: str = "none"
    flat_field_sigma_nm: float | None = None
    target_pixel_size_nm: float | None = None

    def __post_init__(self):
        check_choice("flat_field", self.flat_field, FLAT_FIELDS)
        if self.flat_field == "gaussian" and not self.flat_field_sigma_nm:
            raise UserError("flat_field gaussian needs flat_field_sigma_nm, the blur width",
                            fix="give it (rfseg preprocess --flat-field-sigma-nm; config: preprocess.flat_field_sigma_nm)")
        if self.xray_passes < 1:
            raise UserError(f"xray_passes must be at least 1, got {self.xray_passes}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> "Recipe":
        """A recipe from its dict (as in preprocess.json or model.json); an older record with only
        ``flat_field_sigma_nm`` means a Gaussian flat field."""
        d = dict(d or {})
        if d.get("flat_field_sigma_nm") and "flat_field" not in d:
            d["flat_field"] = "gaussian"
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})


def remove_xrays(image: np.ndarray, threshold: float, passes: int = 2) -> np.ndarray:
    """Replace pixels brighter than ``median + threshold`` by the mean of their 8 neighbours.

    Parameters
    ----------
    image : (rows, cols) array
        Raw micrograph.
    threshold : float
        In the image's raw units (detector counts); each pass re-evaluates the median.
    passes : int
        Number of passes; a pass that finds no hot pixel ends the loop.

    Returns
    -------
    (rows, cols) float32 array, a new array.
    """
    out = np.asarray(image, np.float32).copy()
    for _ in range(passes):
        hot = out > np.median(out) + threshold
        if not hot.any():
            break
        out[hot] = ndimage.convolve(out, _NEIGHBOURS, mode="reflect")[hot]
    return out


def _check_positive(surface: np.ndarray, what: str) -> None:
    if (surface <= 0).any():
        raise RecipeError(f"the {what} flat field needs positive intensities",
                          "for data that are not raw intensities use no flat field (rfseg preprocess --flat-field none; "
                          "config: preprocess.flat_field)", "flat_field")


def flat_field(image: np.ndarray, sigma_px: float) -> np.ndarray:
    """Divide by a Gaussian blur of width ``sigma_px`` (px) to remove slow illumination or thickness variation.

    Returns float32 (rows, cols). Raises UserError if the blur is not positive everywhere."""
    image = np.asarray(image, np.float32)
    background = ndimage.gaussian_filter(image, sigma_px, mode="reflect")
    _check_positive(background, "Gaussian")
    return image / background


def _bernstein(n_px: int, degree: int) -> np.ndarray:
    """(n_px, degree + 1) Bernstein basis at the pixel centres, mapped to [0, 1]."""
    t = (np.arange(n_px) + 0.5) / n_px
    return np.stack([comb(degree, i) * t**i * (1 - t) ** (degree - i) for i in range(degree + 1)], axis=1)


def bezier_surface(image: np.ndarray, degree: int = 2, scale: float = 0.25, reweights: int = 2) -> np.ndarray:
    """The slow illumination of a micrograph as a Bézier surface of ``degree`` x ``degree`` (the published
    real-data networks' flat field).

    Least squares of the (degree+1)^2 products of Bernstein polynomials in y and x on a copy rescaled by ``scale``;
    then ``reweights`` more fits, each weighting a pixel by exp(-3 e / (2 <e>)) with e the absolute error of the
    previous fit and <e> its mean, so that particles (far from the surface) count less.

    Returns
    -------
    (rows, cols) float64 surface on the image's own grid.
    """
    from skimage.transform import rescale

    image = np.asarray(image, np.float64)
    small = rescale(image, scale, order=1, anti_aliasing=True, preserve_range=True) if scale != 1 else image
    by, bx = _bernstein(small.shape[0], degree), _bernstein(small.shape[1], degree)
    design = (by[:, None, :, None] * bx[None, :, None, :]).reshape(small.size, -1)
    z = small.ravel()
    weights = np.ones_like(z)
    for _ in range(reweights + 1):
        sw = np.sqrt(weights)
        coef, *_ = np.linalg.lstsq(design * sw[:, None], z * sw, rcond=None)
        err = np.abs(z - design @ coef)
        weights = np.exp(-3 * err / (2 * err.mean())) if err.mean() > 0 else np.ones_like(z)
    c = coef.reshape(degree + 1, degree + 1)
    return _bernstein(image.shape[0], degree) @ c @ _bernstein(image.shape[1], degree).T


def bezier_flat_field(image: np.ndarray, **kwargs) -> np.ndarray:
    """Divide by :func:`bezier_surface`. Returns float32 (rows, cols); UserError if the surface is not positive."""
    surface = bezier_surface(image, **kwargs)
    _check_positive(surface, "Bézier")
    return (np.asarray(image, np.float64) / surface).astype(np.float32)


def standardise(image: np.ndarray) -> np.ndarray:
    """Standardisation of a whole micrograph to mean 0 and standard deviation 1.

    Returns float32 (rows, cols). Raises UserError for a constant image."""
    image = np.asarray(image, np.float64)
    std = image.std()
    if not std > 0:
        raise RecipeError("the image is constant", "it carries no information to segment", "constant")
    return ((image - image.mean()) / std).astype(np.float32)


def check_resampling(pixel_size_yx_nm: tuple[float, float], target_nm: float) -> None:
    """RecipeError (topic "pixel_size") when resampling from ``pixel_size_yx_nm`` to ``target_nm`` (nm/px) goes
    beyond :data:`MAX_UPSAMPLING` or :data:`MAX_DOWNSAMPLING`, which almost always means a wrong pixel size."""
    py, px = pixel_size_yx_nm
    factor = max(py, px) / target_nm
    if factor > MAX_UPSAMPLING or 1 / factor > MAX_DOWNSAMPLING:
        raise RecipeError(f"resampling from {px:g} to {target_nm:g} nm/px is a factor {factor:.3g}, beyond the "
                          f"{MAX_UPSAMPLING:g}x up / {MAX_DOWNSAMPLING:g}x down that rfseg accepts",
                          "check the pixel size (rfseg preprocess --pixel-size; config: pixel_size_nm) and the target "
                          "(--target-pixel-size; config: preprocess.target_pixel_size_nm)", "pixel_size")


def resample(image: np.ndarray, pixel_size_yx_nm: tuple[float, float], target_nm: float, is_mask: bool = False):
    """Resample to square pixels of ``target_nm`` nm/px.

    Images: linear with anti-aliasing (float32); masks: nearest neighbour (bool). Raises UserError beyond
    :data:`MAX_UPSAMPLING` or :data:`MAX_DOWNSAMPLING`, which almost always means a wrong pixel size."""
    from skimage.transform import resize

    check_resampling(pixel_size_yx_nm, target_nm)
    py, px = pixel_size_yx_nm
    shape = (max(1, round(image.shape[0] * py / target_nm)), max(1, round(image.shape[1] * px / target_nm)))
    if shape == image.shape:
        return image
    if is_mask:
        return resize(image.astype(np.uint8), shape, order=0, preserve_range=True, anti_aliasing=False).astype(bool)
    return resize(image, shape, order=1, preserve_range=True,
                  anti_aliasing=target_nm > min(py, px)).astype(np.float32)


def apply_recipe(image: np.ndarray, mask: np.ndarray | None, pixel_size_yx_nm: tuple[float, float] | None,
                 recipe: Recipe) -> tuple[np.ndarray, np.ndarray | None, float | None]:
    """The preprocessing of one micrograph (and its mask) by ``recipe``, in its order.

    Parameters
    ----------
    image : (rows, cols) array, raw.
    mask : (rows, cols) bool array or None.
    pixel_size_yx_nm : (float, float) or None
        None for uncalibrated data, which allows only the steps that need no length in nm.
    recipe : Recipe

    Returns
    -------
    (image float32, mask bool or None, pixel size in nm/px or None)
    """
    if recipe.xray_threshold is not None:
        image = remove_xrays(image, recipe.xray_threshold, recipe.xray_passes)
    if pixel_size_yx_nm is None:
        if recipe.flat_field == "gaussian" or recipe.target_pixel_size_nm:
            raise RecipeError("a Gaussian flat field and target_pixel_size_nm need a pixel size, and these data are "
                              "uncalibrated", "give the pixel size or leave both unset", "pixel_size")
        if recipe.flat_field == "bezier":
            image = bezier_flat_field(image)
        return standardise(image), mask, None
    py, px = pixel_size_yx_nm
    if recipe.flat_field == "gaussian":
        image = flat_field(image, recipe.flat_field_sigma_nm / ((py + px) / 2))
    elif recipe.flat_field == "bezier":
        image = bezier_flat_field(image)
    if recipe.target_pixel_size_nm:
        image = resample(image, (py, px), recipe.target_pixel_size_nm)
        if mask is not None:
            mask = resample(mask, (py, px), recipe.target_pixel_size_nm, is_mask=True)
        size = float(recipe.target_pixel_size_nm)
    else:
        if not np.isclose(py, px, rtol=1e-4):
            raise RecipeError(f"pixels are not square ({py:g} x {px:g} nm)",
                              "resample them (rfseg preprocess --target-pixel-size; config: "
                              "preprocess.target_pixel_size_nm)", "pixel_size")
        size = float(px)
    return standardise(image), mask, size
