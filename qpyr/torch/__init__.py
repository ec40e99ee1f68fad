"""PyTorch integration: datasets, collation, samplers and quantization-aware training helpers.

Tensors are ``[C, H, W]`` (batched ``[N, C, H, W]``), float32 in [0, 1] unless asked otherwise.
"""

from qpyr.torch.collate import collate_list, collate_padded, pad_batch
from qpyr.torch.datasets import PyramidDataset, StreamingPyramidDataset
from qpyr.torch.decode import decode_batch
from qpyr.torch.qat import fake_quantize
from qpyr.torch.samplers import DEFAULT_ASPECT_RATIOS, AspectRatioBucketSampler

__all__ = ["PyramidDataset", "StreamingPyramidDataset", "decode_batch", "fake_quantize", "collate_list",
           "collate_padded", "pad_batch", "AspectRatioBucketSampler", "DEFAULT_ASPECT_RATIOS"]
