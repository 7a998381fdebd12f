"""Fast paths of the statistics engine: the same tp, fp, fn, computed straight from the logits.

:func:`fused_statistics` applies the activation block by block inside one custom autograd function, so
neither the probabilities nor a one-hot target is ever held at the logits' size, and the backward pass
recomputes the activation from the saved logits; on CUDA the same is two Triton kernels
(:mod:`softseg.kernels.triton_fused`). Anything it does not cover falls back to
:func:`softseg.activation.activate` + :func:`softseg.statistics.region_statistics`, the reference path.
"""

from softseg.kernels.fused import fused_statistics

__all__ = ["fused_statistics"]
