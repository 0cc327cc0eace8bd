"""LitData-compatible import paths (``litdata.utilities.*``)."""
