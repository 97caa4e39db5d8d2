"""The ``catneuron`` command line: thin subcommands over refimpl, simcluster and gpu."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("catneuron")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"
