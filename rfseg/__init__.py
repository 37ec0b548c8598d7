"""rfseg: receptive field and network complexity of residual UNets for nanoparticle segmentation in TEM."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("rfseg")  # the installed package's metadata (pyproject.toml), so there is one source
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "unknown"
