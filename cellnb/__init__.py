"""cellnb: unsupervised whole-cell segmentation (Din & Yu) for notebooks."""
__version__ = "0.1.0"
