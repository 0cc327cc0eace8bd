"""The package version (a leaf module: stores import it without importing the package root)."""

__version__ = "0.1.0"
