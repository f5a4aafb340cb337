"""boundary: a rootless jail runner with an allowlisting proxy."""

__version__ = "0.1.0"
