"""rfseg: receptive field and network complexity of residual UNets for nanoparticle segmentation in TEM."""

__version__ = "0.1.0"
