"""Fast paths of the statistics engine: the same tp, fp, fn, computed straight from the logits.

- :mod:`softseg.kernels.fused`: the torch block path (CPU, and CUDA without Triton);
- :mod:`softseg.kernels.triton_fused`: the Triton kernels on CUDA;
- :mod:`softseg.kernels.formula`: the same sums and gradient as whole-tensor torch expressions, which
  ``torch.compile`` turns into its own kernels, and which double backward differentiates;
- :mod:`softseg.kernels.ops`: the custom operators ``torch.ops.softseg.logit_statistics`` (and its
  backward) over the first two, with fake implementations and an autograd formula.

Which path runs is decided in one place above these and :mod:`softseg.statistics`: :mod:`softseg.dispatch`.
``softseg.kernels.fused_statistics`` is the old import path of :func:`softseg.dispatch.fused_statistics`.
"""

import importlib

__all__ = ["fused_statistics"]


def __getattr__(name: str):
    # The old import path, resolved lazily: softseg.dispatch builds on this package, not the other way round.
    if name == "fused_statistics":
        return importlib.import_module("softseg.dispatch").fused_statistics
    raise AttributeError(f"module 'softseg.kernels' has no attribute {name!r}")
