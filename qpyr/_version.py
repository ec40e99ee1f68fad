"""Package and format versions."""

__version__ = "0.1.0"

#: The qpyr format version this package writes (MAJOR.MINOR, see spec/format.md).
FORMAT_VERSION = "1.0"
#: Written instead when a store uses a 1.1 addition (the optional manifest field ``plan`` and
#: the ``qpyr.tiles`` codec, written together by the ``adaptive``/``saliency``/``budget``
#: policies; ``qpyr.dct`` with ``entropy: "jfif"``): stores without them stay byte-for-byte 1.0.
FORMAT_VERSION_PLAN = "1.1"
