"""Particles of a segmentation mask: connected components and their measurements in px and nm.

Lengths are reported in both px and nm; when the pixel size is unknown the nm columns are kept and left empty (NaN),
never guessed (the project's uncalibrated convention).
"""

from __future__ import annotations

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
