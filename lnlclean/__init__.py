"""lnlclean: audit and clean label noise in image-classification datasets."""

__version__ = "0.1.0"
