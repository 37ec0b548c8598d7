"""Reading micrographs, masks and manifests (image as float32 + pixel size in nm/px), writing files atomically.

Formats: TIFF (ImageJ, OME or resolution-tag calibration, via tifffile), Gatan DM3/DM4, FEI/Thermo TIA SER/EMI,
Velox and Berkeley EMD (via rosettasciio). Arrays are in numpy order (rows = y, cols = x). Every writer writes to a
temporary name and renames, so a failure never leaves a partial file; folders are replaced only if rfseg wrote them.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import math
import os
import re
import shutil
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
#: pixel sizes outside this range (nm/px) are a wrong calibration, not a microscope: from 0.1 pm to 10 µm per pixel
PIXEL_SIZE_RANGE_NM = (1e-4, 1e4)
#: the smallest image side rfseg reads (px)
MIN_SIDE_PX = 8
MISSING_PIXEL_SIZE_FIX = ("give the pixel size: --pixel-size NM (config: the dataset's pixel_size_nm, or a pixel_size_nm "
                          "column in its manifest)")


@dataclass
class Micrograph:
    """A 2-D image as float32 (rows = y, cols = x) with its pixel size in nm/px along (y, x), or None if unknown."""

    data: np.ndarray
    pixel_size_yx_nm: tuple[float, float] | None
    path: Path
    raw_dtype: str
    #: what the file itself says, (y, x) in nm/px or None, also when ``pixel_size_nm`` overrode it
    file_pixel_size_yx_nm: tuple[float, float] | None = None

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
                f"{self.path}: pixels are not square ({py:g} x {px:g} nm)",
                fix="resample them (rfseg preprocess --target-pixel-size; config: preprocess.target_pixel_size_nm)")
        return float(px)


def unit_to_nm(unit: str | None, where: str) -> float:
    key = (unit or "").strip().lower()
    if key not in UNIT_TO_NM:
        raise UserError(f"{where}: unknown length unit {unit!r}: {MISSING_PIXEL_SIZE_FIX}")
    return UNIT_TO_NM[key]


def check_pixel_size(pixel_size_nm: float, where, source: str = "the pixel size") -> float:
    """``pixel_size_nm`` if it lies in :data:`PIXEL_SIZE_RANGE_NM`, else a UserError naming ``where``."""
    lo, hi = PIXEL_SIZE_RANGE_NM
    if not lo <= pixel_size_nm <= hi:
        raise UserError(f"{where}: {source} {pixel_size_nm:g} nm/px is not a microscope's (rfseg accepts {lo:g} to "
                        f"{hi:g} nm/px): check the calibration or give the pixel size (--pixel-size; config: "
                        f"pixel_size_nm)")
    return pixel_size_nm


def check_2d(data: np.ndarray, path: Path) -> np.ndarray:
    data = np.asarray(data)
    while data.ndim > 2 and 1 in data.shape:  # a single frame stored with extra axes of length 1
        data = data.squeeze(axis=data.shape.index(1))
    if data.ndim != 2:
        raise UserError(f"{path}: expected a 2-D image but found an array of shape {data.shape}: "
                        f"export a single frame")
    if min(data.shape) < MIN_SIDE_PX:
        raise UserError(f"{path}: the image is {data.shape[0]} x {data.shape[1]} px, too small to segment (rfseg "
                        f"needs at least {MIN_SIDE_PX} px a side): is it the micrograph you meant?")
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
    data = np.squeeze(images[0]["data"])
    transposed, px = _rsciio_calibration(images[0]["axes"], path)
    return (data.T if transposed else data), px


def _rsciio_calibration(axes, path: Path) -> tuple[bool, tuple[float, float] | None]:
    """(whether the array is stored (x, y), pixel size (y, x) in nm/px or None) from a rosettasciio signal's axes."""
    axes = [a for a in axes if a.get("size", 2) > 1]
    if len(axes) != 2:
        return False, None
    transposed = [str(a.get("name", "")).lower() for a in axes] == ["x", "y"]  # Berkeley EMD: (x, y) arrays
    if transposed:
        axes = axes[::-1]
    scales = []
    for a in axes:
        units = a.get("units")
        if units in (None, "", "<undefined>") or not a.get("scale"):
            return transposed, None
        scales.append(float(a["scale"]) * unit_to_nm(str(units), str(path)))
    return transposed, (scales[0], scales[1])


def read_header(path) -> tuple[tuple[int, ...], tuple[float, float] | None]:
    """(shape, pixel size (y, x) in nm/px or None) of an image or mask file without reading its pixels (TIFF, PNG;
    DM3/DM4, SER and EMD lazily through rosettasciio). UserError naming the file if it cannot be read."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix in TIFF_SUFFIXES:
            import tifffile

            with tifffile.TiffFile(path) as tif:
                shape = tuple(s for s in tif.series[0].shape if s != 1) if len(tif.series) else tif.pages[0].shape
                return shape, _tiff_pixel_size(tif, path)
        if suffix == ".png":
            import imageio.v3 as iio

            return tuple(iio.improps(path).shape[:2]), None
        if suffix in RSCIIO_SUFFIXES:
            import importlib

            plugin = importlib.import_module(f"rsciio.{RSCIIO_SUFFIXES[suffix]}")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                signals = plugin.file_reader(str(path), lazy=True)
            images = [s for s in signals if len([n for n in s["data"].shape if n != 1]) == 2]
            if not images:
                return tuple(signals[0]["data"].shape) if signals else (), None
            shape = tuple(n for n in images[0]["data"].shape if n != 1)
            transposed, px = _rsciio_calibration(images[0]["axes"], path)
            return (shape[::-1] if transposed else shape), px
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"{path}: cannot read the file ({type(e).__name__}: {e}); is it complete and really a "
                        f"{suffix} file?") from None
    raise UserError(f"{path}: unsupported format {suffix!r}: use one of {', '.join(IMAGE_SUFFIXES + ('.png',))}")


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
        ``data`` float32 of shape (rows, cols); ``pixel_size_yx_nm`` from the file or the override;
        ``file_pixel_size_yx_nm`` what the file says.

    Raises
    ------
    UserError
        One line naming the file, for a missing, unreadable, truncated, non-2-D, too small (under
        :data:`MIN_SIDE_PX`) or non-finite file, or a pixel size outside :data:`PIXEL_SIZE_RANGE_NM`."""
    path, suffix = _checked_path(path, IMAGE_SUFFIXES, "image")
    try:
        data, px = _read_tiff(path) if suffix in TIFF_SUFFIXES else _read_rsciio(path)
    except UserError:
        raise
    except Exception as e:  # readers raise many types for truncated or corrupt files
        raise UserError(f"{path}: cannot read the file ({type(e).__name__}: {e}); is it complete and really "
                        f"a {suffix} file?") from None
    data = check_2d(data, path)
    own = px
    if pixel_size_nm is not None:
        check_pixel_size(float(pixel_size_nm), path, "the pixel size given")
        px = (float(pixel_size_nm), float(pixel_size_nm))
    elif px is not None:
        for v in px:
            check_pixel_size(v, path, "the file's pixel size")
    return Micrograph(data.astype(np.float32), px, path, str(data.dtype), own)


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
    data = check_2d(data, path)
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


def sha256(path) -> str:
    """SHA-256 of a file's content (hex)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


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
#: errors of the disk rather than of rfseg: a full or read-only disk, missing permissions, a file-size limit
_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}


def _folder_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


class DiskError(UserError):
    """A write that failed because of the disk (full, read-only, no permission); ``error`` is the OSError."""

    def __init__(self, message: str, error: OSError):
        super().__init__(message)
        self.error = error


def disk_error(error: BaseException, target, partial=None) -> DiskError | None:
    """One line for an OSError that the disk caused while writing ``target`` (None for any other error).

    A full disk names the free space and how far the output had got (``partial``: the file or folder being written,
    measured before it is removed), i.e. at least how much more room the command needs. A DiskError raised while
    writing a file inside ``target`` is restated for ``target``."""
    if isinstance(error, DiskError):
        error = error.error
    if not isinstance(error, OSError) or error.errno not in _DISK_ERRNOS:
        return None
    target = Path(target)
    if error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        probe = next((p for p in (target, *target.parents) if p.exists()), Path("."))
        free = shutil.disk_usage(probe).free
        written = _folder_size(Path(partial)) if partial is not None else 0
        so_far = f", and the output had reached {written / 1e6:.1f} MB when it ran out" if written else ""
        what = "the file-size limit was reached" if error.errno == errno.EFBIG else "the disk is full"
        return DiskError(f"{target}: cannot write it, {what} ({free / 1e6:.1f} MB free on {probe}{so_far}): free "
                         f"space there or choose another output folder (--out); nothing was left behind", error)
    reason = {errno.EROFS: "the disk is read-only"}.get(error.errno, "permission denied")
    return DiskError(f"{target}: cannot write it, {reason}: choose a writable output folder (--out)", error)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, rename: bool = True):
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    A crash or a user error therefore never leaves a partial output file behind; a full or read-only disk becomes a
    :class:`UserError` (:func:`disk_error`). With ``rename=False`` the finished temporary file is left for the
    caller to rename (several files renamed together only once all are written)."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part" + "".join(path.suffixes), dir=path.parent)
        os.close(fd)
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the modes the user's umask asks for
        if rename:
            os.replace(tmp, path)
    except BaseException as e:
        disk = disk_error(e, path, tmp)
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        if disk is not None:
            raise disk from None
        raise


#: a file rfseg writes into every output folder it owns, listing the files it wrote there (JSON)
OUTPUT_MARKER = ".rfseg-output"
#: files other tools put into an output folder about that folder, which replacing it loses nothing of: Snakemake
#: stamps its directory outputs
TOOL_FILES = {".snakemake_timestamp"}


def written_by_rfseg(folder) -> set[str]:
    """The files (relative paths) that rfseg's marker in ``folder`` lists; empty without a marker."""
    marker = Path(folder) / OUTPUT_MARKER
    try:
        record = json.loads(marker.read_text())
        return {str(f) for f in record.get("files", [])}
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return set()


def marker_text(files) -> str:
    """The content of :data:`OUTPUT_MARKER` listing ``files`` (relative paths)."""
    record = {"written_by": "rfseg", "note": "rfseg replaces or rewrites only the files listed here",
              "files": sorted(set(map(str, files)))}
    return json.dumps(record, indent=1) + "\n"


def write_marker(folder, files) -> None:
    """Record in ``folder`` that rfseg wrote ``files`` (relative paths) there."""
    with atomic_path(Path(folder) / OUTPUT_MARKER) as tmp:
        tmp.write_text(marker_text(files))


def foreign_files(folder) -> list[str]:
    """Files and folders in ``folder`` (relative paths) that rfseg's marker does not list, i.e. that a user added."""
    folder = Path(folder)
    ours = written_by_rfseg(folder) | {OUTPUT_MARKER} | TOOL_FILES
    parents = {str(Path(f).parent) for f in ours} | {str(p) for f in ours for p in Path(f).parents}
    out = []
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        if rel in ours or (p.is_dir() and not p.is_symlink() and rel in parents):
            continue
        if any(str(parent) in out for parent in Path(rel).parents):
            continue
        out.append(rel)
    return out


def _listing(names, limit=3) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _inside(a: Path, b: Path) -> bool:
    return a == b or b in a.parents


def check_output_dir(path, reads=(), look_inside: bool = True, lock_held: bool = False) -> Path:
    """The output folder ``path`` after checking that replacing it loses nothing rfseg did not write.

    Raises UserError if ``path`` is a file, the working folder or a mount point (neither can be replaced), holds or
    lies inside any of the paths in ``reads`` (the inputs of the run), or (with ``look_inside``) holds a file rfseg's
    marker does not list (a user's file, or a folder rfseg never wrote). Unless the caller holds the output's lock
    (``lock_held``), another rfseg run replacing the folder at that moment is reported as such, not as a foreign
    file: between its two renames the folder is briefly absent."""
    path = Path(path)
    if path.is_file():
        raise UserError(f"{path}: the output folder is an existing file: choose a folder name (--out)")
    resolved = path.resolve()
    if resolved == Path.cwd().resolve() or (path.is_dir() and os.path.ismount(path)):
        what = "the working folder" if resolved == Path.cwd().resolve() else "a mount point"
        raise UserError(f"{path}: the output folder is {what}, which rfseg cannot replace as a whole: name a folder "
                        f"inside it, e.g. --out {path / 'out'}")
    for r in reads:
        r = Path(r).resolve()
        if _inside(r, resolved) or _inside(resolved, r):
            raise UserError(f"{path}: the output folder and the input {r} overlap: choose a separate output folder "
                            f"(--out)")
    if look_inside and path.is_dir():
        foreign = foreign_files(path)
        if foreign and not lock_held and _writer_active(path):
            raise _busy_error(path)
        if foreign:
            raise UserError(f"{path}: the output folder holds files that rfseg did not write ({_listing(foreign)}): "
                            f"move them away or choose another output folder (--out); rfseg replaces only what it "
                            f"wrote itself")
    return path


def _lock_file(path: Path) -> Path:
    return path.parent / f".{path.name}.rfseg-lock"


def _busy_error(path: Path) -> UserError:
    return UserError(f"{path}: another rfseg command is writing this output now: wait for it to end or choose "
                     f"another output folder (--out)")


def _writer_active(path: Path) -> bool:
    """Whether another process holds the output lock of ``path`` now (:func:`output_lock`)."""
    import fcntl

    try:
        fd = os.open(_lock_file(path), os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


@contextlib.contextmanager
def output_lock(path):
    """Hold an exclusive lock on the output ``path`` (a lock file beside it) while the block runs.

    Raises UserError at once if another rfseg process holds it: two commands writing the same output would replace
    each other's results."""
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = _lock_file(path)
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise _busy_error(path) from None
        try:  # the holder before us may have removed the file after we opened it: lock the file now there
            if os.fstat(fd).st_ino == os.stat(lock).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)
        os.close(fd)


_TEMP_NAME = "{prefix}[a-z0-9_]{{8}}\\.(part|old)$"


def _remove_stale_temporaries(path: Path) -> None:
    """Remove the temporary siblings (``.<name>.XXXXXXXX.part`` / ``.old``) that an rfseg run killed while writing
    ``path`` left behind. Called with the output's lock held, so no live run owns them; only folders that carry
    rfseg's marker are touched."""
    pattern = re.compile(_TEMP_NAME.format(prefix=re.escape(f".{path.name}.")))
    if not path.parent.is_dir():
        return
    for p in path.parent.iterdir():
        if p.is_dir() and not p.is_symlink() and pattern.match(p.name) and (
                (p / OUTPUT_MARKER).is_file() or (p / path.name / OUTPUT_MARKER).is_file()):
            shutil.rmtree(p, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, reads=()):
    """Yield a temporary folder beside ``path``; it replaces ``path`` only if the block succeeds.

    ``path`` must be new, empty or a folder rfseg wrote before with no file added since (see
    :func:`check_output_dir`). The run holds the output's lock (:func:`output_lock`); the folder written carries
    :data:`OUTPUT_MARKER` listing its files. The old folder is moved aside, the new one renamed into place, then the
    old one deleted, so at every moment ``path`` is either the old or the new complete folder."""
    path = check_output_dir(path, reads, look_inside=False)  # what needs no lock; the contents once it is held
    tmp = None
    with output_lock(path):
        check_output_dir(path, reads, lock_held=True)  # now that no other run can be changing it
        _remove_stale_temporaries(path)
        try:
            tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent))
            write_marker(tmp, [])  # marks the temporary folder as rfseg's until it is complete
            yield tmp
            write_marker(tmp, [str(p.relative_to(tmp)) for p in tmp.rglob("*")
                               if p.is_file() and p.name != OUTPUT_MARKER])
            os.chmod(tmp, 0o777 & ~_umask())
            old = None
            if path.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
                os.replace(path, old / path.name)
            os.replace(tmp, path)
            tmp = None
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        except BaseException as e:
            disk = disk_error(e, path, tmp)
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
            if disk is not None:
                raise disk from None
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


def write_labels(path, labels: np.ndarray, pixel_size_nm: float | None = None) -> None:
    """An instance label image (rows, cols) as an ImageJ TIFF: uint16 (float32, still exact, beyond 65,535
    labels), 0 = background, with the pixel size for Fiji; a napari Labels layer opens it as it is."""
    labels = np.asarray(labels)
    write_tiff(path, labels.astype(np.uint16 if labels.max(initial=0) <= 65535 else np.float32), pixel_size_nm)


def write_rois(path, labels: np.ndarray) -> int:
    """Each labelled region of ``labels`` (rows, cols) as an ImageJ polygon ROI named by its label, in one zip that
    Fiji's ROI Manager opens; the polygon follows the region's outer edge (marching squares between pixel centres,
    ImageJ coordinates). Returns the number of ROIs."""
    import zipfile

    from roifile import ROI_TYPE, ImagejRoi, roiwrite
    from skimage.measure import find_contours

    labels = np.asarray(labels)
    padded = np.pad(labels, 1)
    rois = []
    for k in np.unique(labels[labels > 0]):
        outline = max(find_contours((padded == k).astype(np.uint8), 0.5), key=len) - 1
        roi = ImagejRoi.frompoints(outline[:, ::-1] + 0.5, name=str(int(k)))  # (x, y); a pixel spans [i, i+1)
        roi.roitype = ROI_TYPE.POLYGON
        rois.append(roi)
    with atomic_path(path) as tmp:
        if rois:
            roiwrite(tmp, rois, mode="w")
        else:
            zipfile.ZipFile(tmp, "w").close()
    return len(rois)


def write_csv(df, path) -> None:
    """Write a pandas DataFrame as CSV atomically."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


def write_json(obj, path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=json_default) + "\n")


def json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, (np.ndarray, tuple)):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


class _PlainWriter:
    """A file seen only through ``write``: numpy then writes in chunks through Python, whose errors carry errno (its
    own fast path for real files reports a full disk as "N requested and M written", without one)."""

    def __init__(self, file):
        self.file = file

    def write(self, data):
        return self.file.write(data)


def save_npy(path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(_PlainWriter(f), array)
