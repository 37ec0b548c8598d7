"""The Python API: a few names over the stages, so a notebook segments a micrograph in three lines and gets what
``rfseg predict`` writes.

>>> import rfseg
>>> model = rfseg.load("au-5nm-423e")                     # a shipped bundle by name: the five-fold ensemble
>>> result = model.segment("micrograph.dm4")               # or a 2-D array with pixel_size_nm=...
>>> result.particles.head(); result.save("seg/")           # the particle table; the files predict writes

Nothing here computes anything of its own: :class:`Model` is the predictor of ``rfseg predict``
(:class:`rfseg.blocks.predictor.Predictor`) and :meth:`Model.segment` its per-micrograph step
(:func:`rfseg.stages.predict.segment_micrograph`), so the command line and Python give the same results.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from rfseg.blocks import bundle, io
from rfseg.blocks.models import ArchSpec, describe
from rfseg.blocks.predictor import Predictor
from rfseg.errors import UserError
from rfseg.stages.importer import PRETRAINED, SHIPPED, shipped_models
from rfseg.stages.predict import Segmentation, segment_micrograph


def _bundles(entry) -> list[Path]:
    """The bundle folders ``entry`` names (see :func:`model_folders`), or none."""
    path = Path(entry)
    if not path.exists():
        if str(entry) not in SHIPPED:
            return []
        path = PRETRAINED / str(entry)
    if bundle.is_bundle(path):
        return [path]
    return sorted(p for p in path.iterdir() if bundle.is_bundle(p)) if path.is_dir() else []


def is_model(entry) -> bool:
    """Whether ``entry`` names models: a bundle folder, a folder of bundles, or a shipped bundle's name."""
    return bool(_bundles(entry))


def model_folders(name_or_folders) -> list[Path]:
    """The bundle folders a name stands for: a shipped bundle's name (``au-5nm-423e``: its members), a folder of
    bundles (an ensemble folder: every bundle in it), a bundle folder, or a list of any of these.

    Raises
    ------
    UserError
        For a name that is no shipped bundle and a path that holds no bundle.

    Example
    -------
    >>> model_folders("au-5nm-423e")   # the five folds' bundle folders
    """
    entries = [name_or_folders] if isinstance(name_or_folders, (str, Path)) else list(name_or_folders)
    folders = []
    for entry in entries:
        found = _bundles(entry)
        if not found:
            raise UserError(f"{entry}: neither a shipped model ({', '.join(SHIPPED)}; rfseg models lists them) nor "
                            f"a folder of model bundles (model.pt + model.json)")
        folders += found
    return folders


class Model:
    """One model bundle or an ensemble of them (the seeds of an architecture, the folds of a published network),
    ready to segment micrographs of any size (rows, cols), which are resampled to the networks' pixel size in nm/px
    and back.

    Parameters
    ----------
    name_or_folders : str, path or list
        What :func:`model_folders` accepts.
    device, tile, overlap, batch_size, tta, precision, compile :
        Inference settings, as ``rfseg predict`` takes them (``compile="off"`` by default here: a notebook segments
        one micrograph at a time).

    Raises
    ------
    UserError
        As ``rfseg predict`` does: unknown names, damaged bundles, models of different pixel sizes, duplicates.

    Example
    -------
    >>> model = rfseg.Model("results/hrtem/models/n2_p44", tta=True)   # a folder of seeds: an ensemble
    """

    def __init__(self, name_or_folders, *, device: str = "auto", tile="auto", overlap: float = 0.5,
                 batch_size: int = 8, tta: bool = False, precision: str = "auto", compile="off"):
        self.folders = model_folders(name_or_folders)
        self.predictor = Predictor(self.folders, device=device, tile=tile, overlap=overlap, batch_size=batch_size,
                                   tta=tta, precision=precision, compile=compile)

    def __len__(self) -> int:
        return len(self.folders)

    def __repr__(self) -> str:
        meta = self.predictor.metas[0]
        return (f"rfseg.Model({meta.get('model_name', meta['name'])}: {len(self)} network(s) {meta['name']}, "
                f"RF {meta['rf_px']} px, trained at {meta['pixel_size_nm']} nm/px)")

    @property
    def pixel_size_nm(self) -> float | None:
        """The pixel size (nm/px) the networks were trained at; micrographs at another are resampled to it."""
        return self.predictor.pixel_size_nm

    def segment(self, image, pixel_size_nm: float | None = None, *, min_area_px: float | None = None,
                min_area_nm2: float | None = None, keep_all: bool = False, split_touching: bool = False,
                split_min_distance_nm: float | None = None, drop_border: bool = False) -> Segmentation:
        """Segment one micrograph and measure its particles.

        Parameters
        ----------
        image : path or ndarray
            A micrograph file (TIFF, DM3/DM4, SER/EMI, EMD; its pixel size is read from it) or a 2-D array
            (rows, cols) of raw intensities.
        pixel_size_nm : float, optional
            nm/px of an array, or of a file without one (it overrides a file's own).
        min_area_px, min_area_nm2, keep_all, split_touching, split_min_distance_nm, drop_border :
            The particle filter, as ``rfseg predict`` applies it.

        Returns
        -------
        Segmentation
            ``probability`` (rows, cols) float32, ``mask`` bool, ``labels`` int32 (the ``label`` column of
            ``particles``), ``uncertainty`` (ensembles; else None), ``particles`` (DataFrame, lengths in px and nm),
            ``pixel_size_nm``; ``save(folder)`` writes what ``rfseg predict`` writes.

        Raises
        ------
        UserError
            For an unreadable file, an array that is not 2-D, a missing pixel size the networks need, a pixel size
            too far from theirs.

        Example
        -------
        >>> result = rfseg.load("au-5nm-423e").segment("micrograph.dm4")
        >>> result.particles[["label", "equivalent_diameter_nm"]].head()
        >>> result.save("seg/")   # the files rfseg predict writes, for Fiji and napari
        """
        if isinstance(image, (str, Path)):
            img = io.read_image(image, pixel_size_nm)
            data, px, name, where = img.data, img.pixel_size_yx_nm, Path(image).stem, Path(image)
            own = img.file_pixel_size_yx_nm
        else:
            data = np.asarray(image)
            if data.ndim != 2:
                raise UserError(f"the image array has shape {data.shape}: give a 2-D micrograph (rows, cols)")
            data = io.check_2d(data, "the image array").astype(np.float32)
            px = None if pixel_size_nm is None else (io.check_pixel_size(float(pixel_size_nm), "the image array"),) * 2
            name, where, own = "image", "the image array", None
        return segment_micrograph(self.predictor, data, px, name=name, where=where, file_pixel_size_yx_nm=own,
                                  min_area_px=min_area_px, min_area_nm2=min_area_nm2, keep_all=keep_all,
                                  split_touching=split_touching, split_min_distance_nm=split_min_distance_nm,
                                  drop_border=drop_border)


def load(name_or_folders, **settings) -> Model:
    """The networks of a shipped bundle (by name, e.g. ``"au-5nm-423e"``), of an ensemble folder, or of bundle
    folders, as one :class:`Model`; ``settings`` are :class:`Model`'s inference settings.

    Example
    -------
    >>> model = rfseg.load("au-5nm-423e")
    >>> model
    rfseg.Model(au-5nm-423e: 5 network(s) n4_p2222, RF 200 px, trained at 0.02 nm/px)
    """
    return Model(name_or_folders, **settings)


def read_micrograph(path) -> tuple[np.ndarray, float | None]:
    """A micrograph file as (float32 array (rows, cols), pixel size in nm/px or None).

    Raises
    ------
    UserError
        For an unreadable, non-2-D or non-finite file, and for pixels that are not square.

    Example
    -------
    >>> data, pixel_size_nm = rfseg.read_micrograph("micrograph.dm4")
    """
    img = io.read_image(path)
    return img.data, img.pixel_size_nm


def models() -> pd.DataFrame:
    """The shipped model bundles: one row per name, with its members, architecture, pixel size (nm/px) and the
    data it was trained on (material, diameter in nm, dose in e/Å²).

    Example
    -------
    >>> rfseg.models()[["name", "members", "diameter_nm", "dose_e_per_A2"]]
    """
    return shipped_models()


def arch(name: str, pixel_size_nm: float | None = None) -> dict:
    """Blocks, pools, dilations, parameters and receptive field (px, and nm with ``pixel_size_nm``) of an
    architecture by its canonical name (``"n2_p44"``).

    Raises
    ------
    UserError
        For a name that is not of the form ``n<N>_p<pools>[_d<dilations>][_avg]``.

    Example
    -------
    >>> rfseg.arch("n2_p44", pixel_size_nm=0.02)["rf_nm"]
    2.4
    """
    return describe(ArchSpec.from_name(name), pixel_size_nm)
