"""The installed imagery-client's version."""

from importlib import metadata

try:
    __version__ = metadata.version("imagery-client")
except metadata.PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
