"""Losses, apart from any model: the geo-weighting kernels (a leaf), GWH-InfoNCE and its
reference form, the fused memory-bounded version the trainer uses, GeoSURGE's partition loss."""

from hierloc.losses.gwh import GWHInfoNCE, LossConfig, gwh_infonce, infonce
from hierloc.losses.kernels import KERNELS, log_kernel
from hierloc.losses.partition import partition_loss

__all__ = [
    "KERNELS",
    "GWHInfoNCE",
    "LossConfig",
    "gwh_infonce",
    "infonce",
    "log_kernel",
    "partition_loss",
]
