"""Reading micrographs, masks and manifests (image as float32 + pixel size in nm/px), writing files atomically.

Formats: TIFF (ImageJ, OME or resolution-tag calibration, via tifffile), Gatan DM3/DM4, FEI/Thermo TIA SER/EMI,
Velox and Berkeley EMD (via rosettasciio). Arrays are in numpy order (rows = y, cols = x). Every writer writes to a
temporary name and renames, so a failure never leaves a partial file; folders are replaced only if rfseg wrote them.
"""

from __future__ import annotations

import contextlib
import glob
import json
import math
import os
import re
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rfseg.errors import UserError

#: length units as they appear in microscopy files, in nm
UNIT_TO_NM = {
    "nm": 1.0, "n_m": 1.0, "nanometer": 1.0, "nanometers": 1.0, "nanometre": 1.0,
    "a": 0.1, "å": 0.1, "\u212b": 0.1, "angstrom": 0.1, "angstroms": 0.1,
    "pm": 1e-3,
    "um": 1e3, "µm": 1e3, "\u03bcm": 1e3, "micron": 1e3, "microns": 1e3, "micrometer": 1e3, "\\u00b5m": 1e3,
    "mm": 1e6, "cm": 1e7, "m": 1e9, "meter": 1e9, "metre": 1e9, "inch": 2.54e7,
}
TIFF_SUFFIXES = (".tif", ".tiff")
RSCIIO_SUFFIXES = {".dm3": "digitalmicrograph", ".dm4": "digitalmicrograph", ".ser": "tia", ".emi": "tia",
                   ".emd": "emd"}
IMAGE_SUFFIXES = TIFF_SUFFIXES + tuple(RSCIIO_SUFFIXES)
MASK_SUFFIXES = TIFF_SUFFIXES + (".png",)
MISSING_PIXEL_SIZE_FIX = ("give the pixel size: --pixel-size NM (config: the dataset's pixel_size_nm, or a pixel_size_nm "
                          "column in its manifest)")


@dataclass
class Micrograph:
    """A 2-D image as float32 (rows = y, cols = x) with its pixel size in nm/px along (y, x), or None if unknown."""

    data: np.ndarray
    pixel_size_yx_nm: tuple[float, float] | None
    path: Path
    raw_dtype: str

    @property
    def pixel_size_nm(self) -> float | None:
        """The square pixel size in nm/px, None if unknown.

        Raises
        ------
        UserError
            If the pixels are not square (then resample with ``target_pixel_size_nm``)."""
        if self.pixel_size_yx_nm is None:
            return None
        py, px = self.pixel_size_yx_nm
        if not np.isclose(py, px, rtol=1e-4):
            raise UserError(
                f"{self.path}: pixels are not square ({py:g} x {px:g} nm): resample them (rfseg preprocess "
                f"--target-pixel-size; config: preprocess.target_pixel_size_nm)"
            )
        return float(px)


def unit_to_nm(unit: str | None, where: str) -> float:
    key = (unit or "").strip().lower()
    if key not in UNIT_TO_NM:
        raise UserError(f"{where}: unknown length unit {unit!r}: {MISSING_PIXEL_SIZE_FIX}")
    return UNIT_TO_NM[key]


def _check_2d(data: np.ndarray, path: Path) -> np.ndarray:
    data = np.squeeze(np.asarray(data))
    if data.ndim != 2:
        raise UserError(f"{path}: expected a 2-D image but found an array of shape {data.shape}: "
                        f"export a single frame")
    if data.dtype.kind not in "uif":
        raise UserError(f"{path}: pixel type {data.dtype} is not a grey-scale number type: convert to integer "
                        f"or float grey values")
    if data.dtype.kind == "f" and not np.isfinite(data).all():
        raise UserError(f"{path}: the image contains NaN or infinite values: fix or crop them before use")
    return data


# ------------------------------------------------------------------------------------------------------ TIFF
def _tiff_pixel_size(tif, path: Path) -> tuple[float, float] | None:
    page = tif.pages[0]
    if tif.is_ome and tif.ome_metadata:
        m = re.search(r"<Pixels[^>]*>", tif.ome_metadata)
        if m:
            attrs = dict(re.findall(r'(\w+)="([^"]*)"', m.group(0)))
            if "PhysicalSizeX" in attrs:
                fx = unit_to_nm(attrs.get("PhysicalSizeXUnit", "µm"), str(path))
                fy = unit_to_nm(attrs.get("PhysicalSizeYUnit", attrs.get("PhysicalSizeXUnit", "µm")), str(path))
                px = float(attrs["PhysicalSizeX"]) * fx
                return float(attrs.get("PhysicalSizeY", attrs["PhysicalSizeX"])) * fy, px
    tags = page.tags
    if "XResolution" not in tags:
        return None
    xr, yr = tags["XResolution"].value, tags.get("YResolution", tags["XResolution"]).value
    xres, yres = xr[0] / xr[1], yr[0] / yr[1]
    if xres <= 0 or yres <= 0:
        return None
    if tif.is_imagej and tif.imagej_metadata and tif.imagej_metadata.get("unit"):
        unit = tif.imagej_metadata["unit"]
        if unit.lower() in ("pixel", "pixels", ""):
            return None
        f = unit_to_nm(unit, str(path))
    else:
        unit = int(tags["ResolutionUnit"].value) if "ResolutionUnit" in tags else 2
        if unit == 1:  # RESUNIT_NONE: a ratio, not a physical size
            return None
        f = UNIT_TO_NM["inch"] if unit == 2 else UNIT_TO_NM["cm"]
    return f / yres, f / xres


def _read_tiff(path: Path):
    import tifffile

    with tifffile.TiffFile(path) as tif:
        if len(tif.series) and len(tif.series[0].shape) > 2 and np.prod(tif.series[0].shape[:-2]) > 1:
            raise UserError(f"{path}: expected a 2-D image but found a stack of shape {tif.series[0].shape}: "
                            f"export a single frame")
        data = tif.pages[0].asarray()
        return data, _tiff_pixel_size(tif, path)


# --------------------------------------------------------------------------------------------------- rsciio
def _read_rsciio(path: Path):
    import importlib

    plugin = importlib.import_module(f"rsciio.{RSCIIO_SUFFIXES[path.suffix.lower()]}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        signals = plugin.file_reader(str(path), lazy=False)
    images = [s for s in signals if np.squeeze(s["data"]).ndim == 2 and s["data"].dtype.kind in "uif"]
    if not images:
        shapes = [np.shape(s["data"]) for s in signals]
        raise UserError(f"{path}: no 2-D grey-scale image in the file (found arrays of shape {shapes}): "
                        f"export a single frame")
    sig = images[0]
    data = np.squeeze(sig["data"])
    axes = [a for a in sig["axes"] if a.get("size", 2) > 1]
    if len(axes) != 2:
        return data, None
    names = [str(a.get("name", "")).lower() for a in axes]
    if names == ["x", "y"]:  # Berkeley EMD via rosettasciio: array is transposed relative to (y, x)
        data, axes = data.T, axes[::-1]
    scales = []
    for a in axes:
        units = a.get("units")
        if units in (None, "", "<undefined>") or not a.get("scale"):
            return data, None
        scales.append(float(a["scale"]) * unit_to_nm(str(units), str(path)))
    return data, (scales[0], scales[1])


def _checked_path(path, suffixes, what: str) -> tuple[Path, str]:
    """(path, lower-case suffix) after checking the format is supported and the file exists."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in suffixes:
        raise UserError(f"{path}: unsupported {what} format {suffix!r}: use one of {', '.join(suffixes)}")
    if not path.is_file():
        raise UserError(f"{path}: {what} file not found: check the path in the config or manifest")
    return path, suffix


def read_image(path, pixel_size_nm: float | None = None) -> Micrograph:
    """Read a 2-D micrograph.

    Parameters
    ----------
    path : path-like
        TIFF, DM3/DM4, SER/EMI or EMD file.
    pixel_size_nm : float, optional
        Pixel size in nm/px that overrides what the file says (for files without one).

    Returns
    -------
    Micrograph
        ``data`` float32 of shape (rows, cols); ``pixel_size_yx_nm`` from the file or the override.

    Raises
    ------
    UserError
        One line naming the file, for a missing, unreadable, truncated, non-2-D or non-finite file."""
    path, suffix = _checked_path(path, IMAGE_SUFFIXES, "image")
    try:
        data, px = _read_tiff(path) if suffix in TIFF_SUFFIXES else _read_rsciio(path)
    except UserError:
        raise
    except Exception as e:  # readers raise many types for truncated or corrupt files
        raise UserError(f"{path}: cannot read the file ({type(e).__name__}: {e}); is it complete and really "
                        f"a {suffix} file?") from None
    data = _check_2d(data, path)
    if pixel_size_nm is not None:
        if not pixel_size_nm > 0:
            raise UserError(f"{path}: pixel_size_nm must be positive, got {pixel_size_nm}")
        px = (float(pixel_size_nm), float(pixel_size_nm))
    return Micrograph(data.astype(np.float32), px, path, str(data.dtype))


def read_mask(path, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read a label image (PNG or TIFF); any nonzero pixel is particle.

    Returns bool (rows, cols). Raises UserError for an unreadable file or a shape other than ``shape``."""
    path, suffix = _checked_path(path, MASK_SUFFIXES, "mask")
    try:
        if suffix == ".png":
            import imageio.v3 as iio

            data = iio.imread(path)
            if data.ndim == 3:  # RGB(A) label PNG: any channel nonzero
                data = data[..., :3].max(axis=-1)
        else:
            data, _ = _read_tiff(path)
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"{path}: cannot read the mask ({type(e).__name__}: {e}); is the file complete?") from None
    data = _check_2d(data, path)
    if shape is not None and data.shape != tuple(shape):
        raise UserError(f"{path}: mask is {data.shape[0]}x{data.shape[1]} px but its image is "
                        f"{shape[0]}x{shape[1]} px: they must have the same shape")
    return data != 0


# ------------------------------------------------------------------------------------------------ manifests
def manifest_from_glob(images: str, masks: str):
    """Pair images matched by a glob with masks named by a pattern using ``{stem}`` (the image name without suffix).

    Returns a DataFrame with columns image, mask. Raises UserError if the glob matches nothing or the pattern lacks
    ``{stem}``."""
    import pandas as pd

    if "{stem}" not in masks:
        raise UserError(f"masks: the pattern {masks!r} must contain {{stem}}, e.g. masks/{{stem}}.tif")
    paths = sorted(glob.glob(images))
    if not paths:
        raise UserError(f"images: the pattern {images!r} matches no file: check the path")
    return pd.DataFrame({"image": paths, "mask": [masks.format(stem=Path(p).stem) for p in paths]})


def read_manifest(path):
    """A manifest CSV with columns image, mask and optionally pixel_size_nm (overrides the file) and group
    (micrographs of one group always land in the same split). Relative paths are relative to the manifest."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: manifest not found: check the manifest path in the config")
    try:
        df = pd.read_csv(path)
    except Exception as e:
        raise UserError(f"{path}: cannot read the manifest as CSV ({e})") from None
    missing = {"image", "mask"} - set(df.columns)
    if missing:
        raise UserError(f"{path}: manifest lacks column(s) {sorted(missing)}: it needs image and mask columns")
    if df.empty:
        raise UserError(f"{path}: the manifest lists no images")
    base = path.parent
    for col in ("image", "mask"):
        df[col] = [str(p if Path(p).is_absolute() else base / p) for p in df[col]]
    return df


def is_missing(value) -> bool:
    """True for None and NaN (a blank cell of a CSV column)."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def read_json(path, what: str = "file") -> dict:
    """A JSON file as a dict; UserError naming the file if it is missing or not valid JSON (e.g. truncated)."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: {what} not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: the {what} is not valid JSON ({e}); is it complete?") from None


# ------------------------------------------------------------------------------------------------- writing
@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    A crash or a user error therefore never leaves a partial output file behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part" + "".join(path.suffixes), dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the modes the user's umask asks for
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


#: a file rfseg writes into every output folder it owns; only such folders are ever replaced
OUTPUT_MARKER = ".rfseg-output"


def check_output_dir(path, reads=()) -> Path:
    """The output folder ``path`` after checking that replacing it loses nothing rfseg did not write.

    Raises UserError if ``path`` is a file, a non-empty folder without rfseg's marker (a folder of the user's, the
    working folder, a folder of raw micrographs), or holds any of the paths in ``reads`` (the inputs of the run)."""
    path = Path(path)
    if path.is_file():
        raise UserError(f"{path}: the output folder is an existing file: choose a folder name")
    resolved = path.resolve()
    for r in reads:
        r = Path(r).resolve()
        if r == resolved or resolved in r.parents:
            raise UserError(f"{path}: the output folder holds the input {r}: choose a separate output folder")
    if path.is_dir() and any(path.iterdir()) and not (path / OUTPUT_MARKER).is_file():
        raise UserError(f"{path}: the output folder already holds files that rfseg did not write: choose a new or "
                        f"empty folder (rfseg replaces only folders it wrote itself)")
    return path


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, reads=()):
    """Yield a temporary folder beside ``path``; it replaces ``path`` only if the block succeeds.

    ``path`` must be new, empty or a folder rfseg wrote before (see :func:`check_output_dir`); the folder written
    carries :data:`OUTPUT_MARKER`. The old folder is moved aside, the new one renamed into place, then the old one
    deleted, so at every moment ``path`` is either the old or the new complete folder."""
    import shutil

    path = check_output_dir(path, reads)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent))
    try:
        yield tmp
        (tmp / OUTPUT_MARKER).write_text("written by rfseg; rfseg may replace this folder as a whole\n")
        os.chmod(tmp, 0o777 & ~_umask())
        old = None
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old / path.name)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_tiff(path, data: np.ndarray, pixel_size_nm: float | None = None, compress: bool = True) -> None:
    """Write a 2-D image or an (n, H, W) stack as an ImageJ TIFF (Fiji shows the pixel size in nm), atomically.

    float64 is stored as float32, bool as uint8 and wider integers as uint16 (ImageJ's types)."""
    import tifffile

    data = np.asarray(data)
    if data.dtype == bool:
        data = data.astype(np.uint8)
    elif data.dtype.kind == "f":
        data = data.astype(np.float32)
    elif data.dtype.kind in "iu" and data.dtype.itemsize > 2:
        if data.size and (data.min() < 0 or data.max() > 65535):
            raise ValueError("integer image does not fit uint16")
        data = data.astype(np.uint16)
    kwargs = {"metadata": {"axes": "ZYX"}} if data.ndim == 3 else {}
    if pixel_size_nm is not None:
        kwargs = dict(resolution=(1.0 / pixel_size_nm, 1.0 / pixel_size_nm),
                      metadata={**kwargs.get("metadata", {}), "unit": "nm"})
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, data, imagej=True, compression="zlib" if compress else None, **kwargs)


def write_csv(df, path) -> None:
    """Write a pandas DataFrame as CSV atomically."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


def write_json(obj, path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=_json_default) + "\n")


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, (np.ndarray, tuple)):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def save_npy(path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, array)
