"""Particles of a segmentation mask: post-processing into particles, and their measurements in px and nm.

A network's hard mask holds specks, holes and touching particles that a microscopist would not count as particles:
:func:`postprocess` fills holes, optionally splits touching particles (distance-transform watershed) and drops specks
below a size that, by default, comes from the particles the network was trained on (:func:`default_min_area_px`).
Lengths are reported in both px and nm; when the pixel size is unknown the nm columns are kept and left empty (NaN),
never guessed (the project's uncalibrated convention).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

LENGTHS = ("centroid_y", "centroid_x", "equivalent_diameter", "major_axis", "minor_axis")


def label_particles(mask: np.ndarray) -> np.ndarray:
    """8-connected components of a bool mask (rows, cols) as an int32 label image (0 = background)."""
    from skimage.measure import label

    return label(np.asarray(mask, bool), connectivity=2).astype(np.int32)


def particle_table(labels: np.ndarray, prob: np.ndarray, pixel_size_nm: float | None) -> pd.DataFrame:
    """One row per labelled particle.

    Parameters
    ----------
    labels : (rows, cols) int array, 0 = background
    prob : (rows, cols) float array, the particle probability
    pixel_size_nm : float or None

    Returns
    -------
    DataFrame with label, centroid, area, equivalent diameter, major/minor axis (each as ``_px`` and ``_nm``;
    areas as ``area_px2`` / ``area_nm2``), eccentricity, mean probability and ``touches_border``.
    """
    from skimage.measure import regionprops_table

    props = regionprops_table(labels, intensity_image=prob, properties=(
        "label", "centroid", "area", "equivalent_diameter_area", "axis_major_length", "axis_minor_length",
        "eccentricity", "intensity_mean", "bbox"))
    px = np.nan if pixel_size_nm is None else float(pixel_size_nm)
    values = {"centroid_y": props["centroid-0"], "centroid_x": props["centroid-1"],
              "equivalent_diameter": props["equivalent_diameter_area"], "major_axis": props["axis_major_length"],
              "minor_axis": props["axis_minor_length"]}
    t = pd.DataFrame({"label": props["label"]})
    for name in LENGTHS:
        t[f"{name}_px"] = values[name]
        t[f"{name}_nm"] = values[name] * px
    t["area_px2"] = props["area"]
    t["area_nm2"] = props["area"] * px**2
    t["eccentricity"] = props["eccentricity"]
    t["mean_probability"] = props["intensity_mean"]
    rows, cols = labels.shape
    t["touches_border"] = ((props["bbox-0"] == 0) | (props["bbox-1"] == 0) | (props["bbox-2"] == rows)
                           | (props["bbox-3"] == cols))
    return t


def drop_labels(labels: np.ndarray, table: pd.DataFrame, drop: pd.Series) -> tuple[np.ndarray, pd.DataFrame]:
    """Remove the particles where ``drop`` (a bool Series aligned with ``table``) is True from both."""
    gone = table.loc[drop, "label"].to_numpy()
    labels = labels.copy()
    labels[np.isin(labels, gone)] = 0
    return labels, table[~drop].reset_index(drop=True)


#: the default speck rule: a component smaller than this fraction of the 1st-percentile area of the (whole,
#: border-free) particles in the network's training masks is not a particle
MIN_AREA_FRACTION_OF_P1 = 0.25
#: for a bundle without training-mask statistics (a published network): a quarter of the area of a disc of half the
#: nominal particle diameter of its training data
NOMINAL_DIAMETER_FRACTION = 0.5


def size_statistics(masks, pixel_size_nm: float | None) -> dict:
    """Sizes of the particles in label masks that do not touch the image border (whole particles).

    Parameters
    ----------
    masks : iterable of (rows, cols) bool arrays (full micrographs, not patches, so particles are not cut)
    pixel_size_nm : float or None

    Returns
    -------
    dict with ``n``, area percentiles ``area_px2_p1``/``_p5``/``_p50``/``_p95`` and ``area_nm2_*`` (None when
    uncalibrated), and the median equivalent diameter in px and nm.
    """
    areas = []
    for mask in masks:
        t = particle_table(label_particles(mask), np.asarray(mask, np.float32), None)
        areas += list(t.loc[~t["touches_border"], "area_px2"])
    areas = np.asarray(areas, float)
    out = {"n": int(len(areas))}
    for q in (1, 5, 50, 95):
        a = float(np.percentile(areas, q)) if len(areas) else None
        out[f"area_px2_p{q}"] = a
        out[f"area_nm2_p{q}"] = None if a is None or pixel_size_nm is None else a * pixel_size_nm**2
    d = float(np.sqrt(4 * np.median(areas) / np.pi)) if len(areas) else None
    out["equivalent_diameter_px_p50"] = d
    out["equivalent_diameter_nm_p50"] = None if d is None or pixel_size_nm is None else d * pixel_size_nm
    return out


def default_min_area_px(meta: dict, pixel_size_nm: float | None) -> tuple[float, str]:
    """The speck threshold (px² on a grid of ``pixel_size_nm``) for a bundle's predictions, and the rule in words.

    From the bundle's training-mask statistics when it has them (:data:`MIN_AREA_FRACTION_OF_P1`), else from the
    nominal particle diameter of a published network (:data:`NOMINAL_DIAMETER_FRACTION`); 0 when neither is known."""
    stats = meta.get("training_particles") or {}
    px_model = meta.get("pixel_size_nm")
    scale = 1.0 if pixel_size_nm is None or px_model is None else (px_model / pixel_size_nm) ** 2
    if stats.get("area_px2_p1"):
        area = MIN_AREA_FRACTION_OF_P1 * stats["area_px2_p1"] * scale
        return area, (f"components under {MIN_AREA_FRACTION_OF_P1:g} x the 1st-percentile area of the "
                      f"{stats['n']} whole particles in the training masks ({stats['area_px2_p1']:.0f} px² at the "
                      f"training pixel size) dropped")
    d_nm = (meta.get("provenance") or {}).get("diameter_nm")
    if d_nm and pixel_size_nm:
        area_nm2 = MIN_AREA_FRACTION_OF_P1 * np.pi / 4 * (NOMINAL_DIAMETER_FRACTION * d_nm) ** 2
        return area_nm2 / pixel_size_nm**2, (
            f"components under {area_nm2:.3g} nm² ({MIN_AREA_FRACTION_OF_P1:g} x a disc of "
            f"{NOMINAL_DIAMETER_FRACTION:g} x the network's nominal {d_nm:g} nm particles) dropped")
    return 0.0, "no size filter (the model has no training-particle statistics)"


def default_split_distance_px(meta: dict, pixel_size_nm: float | None) -> float | None:
    """The watershed seed distance for splitting touching particles: half the median equivalent diameter of the
    training particles (or of the nominal diameter), in px of a grid of ``pixel_size_nm``; None if unknown."""
    stats = meta.get("training_particles") or {}
    px_model = meta.get("pixel_size_nm")
    if stats.get("equivalent_diameter_px_p50"):
        scale = 1.0 if pixel_size_nm is None or px_model is None else px_model / pixel_size_nm
        return 0.5 * stats["equivalent_diameter_px_p50"] * scale
    d_nm = (meta.get("provenance") or {}).get("diameter_nm")
    return 0.5 * d_nm / pixel_size_nm if d_nm and pixel_size_nm else None


def split_touching(mask: np.ndarray, min_distance_px: float) -> np.ndarray:
    """Split touching particles by a watershed of the distance transform (as scikit-image documents it).

    Seeds are the local maxima of the distance to the background at least ``min_distance_px`` apart, one basin per
    seed, within each connected component. Returns an int32 label image."""
    from scipy import ndimage
    from skimage.feature import peak_local_max
    from skimage.segmentation import watershed

    mask = np.asarray(mask, bool)
    distance = ndimage.distance_transform_edt(mask)
    components = label_particles(mask)
    peaks = peak_local_max(distance, min_distance=max(1, int(round(min_distance_px))), labels=components,
                           exclude_border=False)
    markers = np.zeros(mask.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    labels = watershed(-distance, markers, mask=mask, connectivity=2)
    # a component without a seed (a thin sliver) keeps its own label
    unseeded = (labels == 0) & mask
    if unseeded.any():
        extra = label_particles(unseeded)
        labels[extra > 0] = extra[extra > 0] + labels.max()
    return labels.astype(np.int32)


def postprocess(mask: np.ndarray, *, min_area_px: float = 0.0, fill_holes: bool = True,
                split: bool = False, split_min_distance_px: float | None = None) -> tuple[np.ndarray, int]:
    """From a hard segmentation to particles: fill holes inside particles, optionally split touching ones, drop
    components smaller than ``min_area_px``.

    Parameters
    ----------
    mask : (rows, cols) bool
    min_area_px : components below this area (px²) are dropped (specks)
    fill_holes : fill background fully enclosed by a particle
    split, split_min_distance_px : distance-transform watershed with seeds this far apart (px)

    Returns
    -------
    (labels int32 (rows, cols), number of components dropped as too small)
    """
    from scipy import ndimage

    mask = np.asarray(mask, bool)
    if fill_holes:
        mask = ndimage.binary_fill_holes(mask)
    if split:
        if not split_min_distance_px:
            raise ValueError("splitting touching particles needs split_min_distance_px")
        labels = split_touching(mask, split_min_distance_px)
    else:
        labels = label_particles(mask)
    if min_area_px <= 0 or labels.max() == 0:
        return labels, 0
    areas = np.bincount(labels.ravel())
    small = np.flatnonzero(areas < min_area_px)
    small = small[small > 0]
    labels = np.where(np.isin(labels, small), 0, labels)
    # renumber 1..n
    kept = np.unique(labels[labels > 0])
    lookup = np.zeros(int(labels.max()) + 1, np.int32)
    lookup[kept] = np.arange(1, len(kept) + 1)
    return lookup[labels], int(len(small))


@dataclass(frozen=True)
class ParticleFilter:
    """How a hard segmentation becomes particles (:func:`postprocess`), with the rule in words for the tables."""

    min_area_px: float = 0.0
    fill_holes: bool = True
    split: bool = False
    split_min_distance_px: float | None = None
    rule: str = ""

    def apply(self, mask: np.ndarray) -> tuple[np.ndarray, int]:
        return postprocess(mask, min_area_px=self.min_area_px, fill_holes=self.fill_holes, split=self.split,
                           split_min_distance_px=self.split_min_distance_px)

    def columns(self) -> dict:
        return {"min_area_px2": self.min_area_px, "holes_filled": self.fill_holes, "touching_split": self.split}


def particle_filter(meta: dict, pixel_size_nm: float | None, *, min_area_px: float | None = None,
                    min_area_nm2: float | None = None, keep_all: bool = False, split: bool = False,
                    split_min_distance_nm: float | None = None) -> ParticleFilter:
    """The post-processing of a bundle's predictions on a grid of ``pixel_size_nm`` (None: uncalibrated).

    An explicit ``min_area_px`` or ``min_area_nm2`` replaces the default speck rule (:func:`default_min_area_px`);
    ``keep_all`` keeps every component and fills nothing; ``split`` separates touching particles, seeds
    ``split_min_distance_nm`` apart (default: half the median training particle diameter).

    Raises UserError for ``min_area_nm2`` on uncalibrated data or a split without a known seed distance."""
    from rfseg.errors import UserError

    if keep_all:
        return ParticleFilter(0.0, False, False, None, "none: every component kept, holes not filled (--keep-all)")
    if min_area_px is not None and min_area_nm2 is not None:
        raise UserError("give --min-area-px or --min-area-nm2, not both")
    if min_area_nm2 is not None:
        if pixel_size_nm is None:
            raise UserError("--min-area-nm2 needs calibrated micrographs: these have no pixel size, use "
                            "--min-area-px")
        area, rule = min_area_nm2 / pixel_size_nm**2, f"components under {min_area_nm2:g} nm² dropped"
    elif min_area_px is not None:
        area, rule = float(min_area_px), f"components under {min_area_px:g} px² dropped"
    else:
        area, rule = default_min_area_px(meta, pixel_size_nm)
    distance = None
    if split:
        if split_min_distance_nm is not None:
            if pixel_size_nm is None:
                raise UserError("--split-min-distance-nm needs calibrated micrographs")
            distance = split_min_distance_nm / pixel_size_nm
        else:
            distance = default_split_distance_px(meta, pixel_size_nm)
        if not distance:
            raise UserError("splitting touching particles needs a seed distance: give --split-min-distance-nm")
        rule += f"; touching particles split (watershed, seeds {distance:.1f} px apart)"
    return ParticleFilter(area, True, split, distance, rule + "; holes filled")
