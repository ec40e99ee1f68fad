"""uint8 output of reads and loaders: ``Tensor[C, H, W]`` uint8 0..255, rounded half up
(``floor(255 * v + 0.5)`` of the float32 value, which for ``qpyr.dct`` levels is the codec's own
uint8 reconstruction), refused for sources above 8 bits; pinned batches for device-side
normalisation (a no-op without CUDA)."""

from __future__ import annotations

import functools
import warnings

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import qpyr
from qpyr.codecs.dct import DctCodec
from qpyr.errors import InputError
from qpyr.torch.collate import collate_list, collate_padded
from qpyr.torch.datasets import PyramidDataset, StreamingPyramidDataset
from qpyr.torch.decode import decode_batch

POLICIES = ["default", "quality:ssim=0.95,entropy=jfif,chroma=420", "lossless:codec=zstd", "int8", "int4",
            "int8:granularity=block,block=8", "dct:quality=80", "bf16"]


def _expected(f: torch.Tensor) -> torch.Tensor:
    """uint8 from float32 values in [0, 1]: half up (floor(255 x + 0.5) in float32), clamped."""
    return torch.floor(f.float() * 255 + 0.5).clamp(0, 255).to(torch.uint8)


@pytest.fixture(scope="module")
def stores(tmp_path_factory, small_photos) -> dict[str, str]:
    out = {}
    for k, pol in enumerate(POLICIES):
        url = str(tmp_path_factory.mktemp("u8") / f"s{k}.qpyr")
        qpyr.pack(small_photos, url, policy=None if pol == "default" else pol, levels=3, overwrite=True)
        out[pol] = url
    return out


@pytest.mark.parametrize("policy", POLICIES)
def test_read_uint8_is_the_float32_read_rounded_half_up(stores, policy):
    st = qpyr.open(stores[policy])
    for i in range(len(st)):
        f = st.read(i, None)
        u = st.read(i, None, dtype=torch.uint8)
        assert set(u) == set(f)
        for li in f:
            assert u[li].dtype == torch.uint8 and u[li].shape == f[li].shape
            assert torch.equal(u[li], _expected(f[li])), (policy, i, li)
    fb = st.read_batch(list(range(len(st))), 1)
    ub = st.read_batch(list(range(len(st))), 1, dtype=torch.uint8)
    for a, b in zip(fb, ub, strict=True):
        assert b.dtype == torch.uint8 and torch.equal(b, _expected(a))


def test_read_uint8_of_dct_levels_is_the_codec_decode(stores, small_photos):
    """A default-policy (qpyr.dct) level read as uint8 is exactly what the chunk codec's own
    uint8 decoder gives (no float round trip)."""
    st = qpyr.open(stores["default"])
    i = st.names.index("astronaut")
    p = st.fetch(i, [0], coefficients=True)[0]
    assert p.codec is not None and len(p.tiles) == 1
    codec = p.codec
    ref = codec.reconstruct(p.tiles[0][2], "cpu", torch.uint8)[:, :p.height, :p.width]
    assert torch.equal(st.read(i, 0, dtype=torch.uint8)[0], ref)
    assert isinstance(codec, DctCodec)


def test_read_uint8_region(stores):
    st = qpyr.open(stores["default"])
    f = st.read(0, [0, 1], region=(10, 20, 70, 90))
    u = st.read(0, [0, 1], region=(10, 20, 70, 90), dtype=torch.uint8)
    for li in f:
        assert torch.equal(u[li], _expected(f[li]))


def test_uint8_is_refused_for_16_bit_and_float_sources(tmp_path, small_photos):
    a16 = (small_photos["coffee"].astype(np.uint16) * 257)
    af = small_photos["coffee"].astype(np.float32) / 255
    for name, arr in (("deep", a16), ("float", af)):
        url = str(tmp_path / f"{name}.qpyr")
        qpyr.pack({name: arr}, url, policy="lossless", levels=2)
        st = qpyr.open(url)
        with pytest.raises(InputError, match=r"uint8.*8-bit.*" + name):
            st.read(0, 0, dtype=torch.uint8)
        with pytest.raises(InputError, match=r"uint8"):
            st.read_batch([0], 0, dtype=torch.uint8)


def test_read_refuses_other_integer_dtypes(stores):
    st = qpyr.open(stores["default"])
    with pytest.raises(InputError, match="dtype"):
        st.read(0, 0, dtype=torch.int16)


@pytest.mark.parametrize("policy", ["default", "quality:ssim=0.95,entropy=jfif,chroma=420", "int8"])
def test_datasets_give_uint8_samples(stores, policy):
    url = stores[policy]
    st = qpyr.open(url)
    ds = PyramidDataset(url, levels=[0, 2], dtype=torch.uint8)
    for i in range(len(ds)):
        s = ds[i]
        for li, t in s["levels"].items():
            assert t.dtype == torch.uint8
            assert torch.equal(t, _expected(st.read(i, li)[li]))
    sds = StreamingPyramidDataset(url, levels=[1], dtype=torch.uint8, shuffle=False)
    for s in sds:
        assert torch.equal(s["levels"][1], _expected(st.read(s["index"], 1)[1]))
    # payloads decoded on the device as uint8 are the same values
    dds = PyramidDataset(url, levels=[1], device_decode=True)
    b = decode_batch(collate_list([dds[i] for i in range(len(dds))]), "cpu", torch.uint8, pad=True)
    for k in range(len(dds)):
        h, w = (int(x) for x in b["sizes"][1][k])
        assert torch.equal(b["levels"][1][k, :, :h, :w], _expected(st.read(k, 1)[1]))


def test_dataset_rejects_a_bad_dtype(stores):
    with pytest.raises(InputError, match="dtype"):
        PyramidDataset(stores["default"], levels=[0], dtype=torch.int32)
    with pytest.raises(InputError, match="dtype"):
        StreamingPyramidDataset(stores["default"], levels=[0], dtype="uint8")  # type: ignore[arg-type]


def test_uint8_dataloader_with_pin_memory(stores):
    """DataLoader(pin_memory=True) over uint8 samples and the collate functions: accepted on a
    CPU-only machine (pinning skipped), pinned where CUDA exists; the data is the read's."""
    url = stores["default"]
    st = qpyr.open(url)
    ds = PyramidDataset(url, levels=[2], dtype=torch.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns that pinning is skipped without an accelerator
        ld = DataLoader(ds, batch_size=3, num_workers=1, pin_memory=True,
                        collate_fn=functools.partial(collate_padded, multiple=8))
        batches = list(ld)
    seen = 0
    for b in batches:
        x = b["levels"][2]
        assert x.dtype == torch.uint8 and x.shape[-1] % 8 == 0
        assert x.is_pinned() == torch.cuda.is_available()
        for k, i in enumerate(b["index"].tolist()):
            h, w = (int(v) for v in b["sizes"][2][k])
            assert torch.equal(x[k, :, :h, :w], _expected(st.read(i, 2)[2]))
            seen += 1
    assert seen == len(ds)


def test_collate_pin_memory_option(stores):
    """collate_padded / collate_list(pin_memory=True): pinned tensors where CUDA exists, the
    same tensors (no copy, no error) without it."""
    ds = PyramidDataset(stores["default"], levels=[1], dtype=torch.uint8)
    samples = [ds[i] for i in range(3)]
    plain = collate_padded(samples)
    pinned = collate_padded(samples, pin_memory=True)
    assert torch.equal(plain["levels"][1], pinned["levels"][1])
    assert pinned["levels"][1].is_pinned() == torch.cuda.is_available()
    lst = collate_list(samples, pin_memory=True)
    for t, s in zip(lst["levels"][1], samples, strict=True):
        assert torch.equal(t, s["levels"][1]) and t.is_pinned() == torch.cuda.is_available()
