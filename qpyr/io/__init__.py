"""Inputs and storage: the bottom of the data flow.

- :mod:`qpyr.io.storage` — :class:`ObjectStore`, one fsspec-backed byte store (local paths, s3://, gs://).
- :mod:`qpyr.io.inputs` — finding and decoding input images (files, arrays, bucket prefixes, file lists).
- :mod:`qpyr.io.pyramid` — building the float32 pyramid of one image.
"""
