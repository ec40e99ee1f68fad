"""Package and format versions."""

__version__ = "0.1.0"

#: The qpyr format version this package writes by default (MAJOR.MINOR, see spec/format.md):
#: 2.0, the record layout (items as variable-length records in shards filled to a byte target).
FORMAT_VERSION = "2.0"
#: The 1.x layout (padded slots in per-size-class buckets), still read, and written with
#: ``PackOptions(layout="1")`` (appends to a 1.x store stay in 1.x).
FORMAT_VERSION_1 = "1.0"
#: Written instead of 1.0 when a 1.x store uses a 1.1 addition (the optional manifest field ``plan`` and
#: the ``qpyr.tiles`` codec, written together by the ``adaptive``/``saliency``/``budget``
#: policies; ``qpyr.dct`` with ``entropy: "jfif"``): stores without them stay byte-for-byte 1.0.
FORMAT_VERSION_PLAN = "1.1"
