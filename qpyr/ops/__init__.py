"""The library behind each CLI verb: ``info``, ``verify``, ``unpack`` and ``plan``.

Each module is usable from Python; :mod:`qpyr.cli` only parses arguments and prints.
"""
