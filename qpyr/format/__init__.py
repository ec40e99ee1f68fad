"""The on-disk contract (spec/format.md): manifest, Zarr v3 documents, bucket layout, shards, plans.

Nothing here encodes pixels or talks to a policy: these modules turn the store's JSON and binary
structures into checked Python values and back.
"""
