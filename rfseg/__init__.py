"""rfseg: receptive field and network complexity of residual UNets for nanoparticle segmentation in TEM.

The Python API (imported on first use, so ``import rfseg`` stays light):

``rfseg.load(name_or_folders, **settings) -> Model``
    A shipped model by name (``"au-5nm-423e"``; ``rfseg.models()`` lists them), an ensemble folder, or bundle
    folders (``results/<ds>/models/<arch>/seed*``), as one model (an ensemble when several).
``Model.segment(image, pixel_size_nm=None, ...) -> Segmentation``
    A micrograph file (TIFF, DM3/DM4, SER/EMI, EMD; the pixel size from the file) or a 2-D array: ``probability``,
    ``mask``, ``labels``, ``uncertainty``, ``particles`` (a DataFrame in px and nm, as ``rfseg predict`` writes it),
    ``pixel_size_nm``; ``save(folder)`` writes exactly what ``rfseg predict`` writes.
``rfseg.read_micrograph(path) -> (array, pixel_size_nm)``, ``rfseg.models() -> DataFrame``, ``rfseg.arch(name)``.

Example::

    import rfseg
    result = rfseg.load("au-5nm-423e").segment("micrograph.dm4")
    result.particles.head(); result.save("seg/")

Errors a user can fix raise :class:`rfseg.UserError` with one line naming the file or value and the fix, as the
command line prints them. ``help(rfseg.api)`` documents each name.
"""

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version

from rfseg.errors import UserError

try:
    __version__ = version("rfseg")  # the installed package's metadata (pyproject.toml), so there is one source
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "unknown"

__all__ = ["load", "Model", "Segmentation", "read_micrograph", "models", "arch", "UserError", "__version__"]


def __getattr__(name):
    # the API pulls in torch; loading it on first use keeps `rfseg --version` and the workflow's imports light
    if name in ("load", "Model", "read_micrograph", "models", "arch", "model_folders"):
        return getattr(import_module("rfseg.api"), name)
    if name == "Segmentation":
        return import_module("rfseg.stages.predict").Segmentation
    raise AttributeError(f"module 'rfseg' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
