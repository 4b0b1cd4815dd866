"""morphospace: generative models and learned representations of fluorescence microscopy cells."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("morphospace")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0"

__all__ = ["__version__"]
