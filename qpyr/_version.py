"""Package and format versions."""

__version__ = "0.1.0"

#: The qpyr format version this package writes (MAJOR.MINOR, see spec/format.md).
FORMAT_VERSION = "1.0"
