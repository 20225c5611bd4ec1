"""SCE: the loss, the model and its momentum target and queue."""

from sce_sweeps.sce.loss import SCETerms, sce_diagnostics, sce_loss, sce_terms
from sce_sweeps.sce.model import (
    SCEModel,
    SplitBatchNorm2d,
    build_model,
    convert_split_bn,
    mlp,
    momentum_at,
    resnet,
)

__all__ = [
    "SCEModel",
    "SCETerms",
    "SplitBatchNorm2d",
    "build_model",
    "convert_split_bn",
    "mlp",
    "momentum_at",
    "resnet",
    "sce_diagnostics",
    "sce_loss",
    "sce_terms",
]
