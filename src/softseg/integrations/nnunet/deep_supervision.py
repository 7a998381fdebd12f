r"""nnU-Net's ``DeepSupervisionWrapper`` fed with area-downsampled targets instead of its nearest-neighbour ones."""

from __future__ import annotations

from collections.abc import Sequence

from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from torch import Tensor, nn

from softseg.integrations.nnunet.targets import area_target


class AreaTargetDeepSupervision(DeepSupervisionWrapper):
    r"""nnU-Net's weighted sum over deep-supervision outputs, each scored against the area-downsampled target.

    .. math::

        L = \sum_k w_k\, \ell(o_k, A_k(y)),\qquad A_0(y) = y

    where y is the full-resolution target (``targets[0]``; the lower-resolution targets nnU-Net's loader
    made are not read), A_k averages it over the cells of output k (:func:`area_target`, on y's device),
    and outputs with w_k = 0 are skipped as in nnU-Net (their targets are never computed).

    Convention:
        - ``loss``: the per-scale loss ``loss(output, target)``; ``weight_factors``: one weight per output
          (nnU-Net's own, from its ``_build_loss``), at least one non-zero.
        - ``forward(outputs, targets)``: lists of equal length; ``outputs[k]`` is (B, C, \*spatial_k),
          ``targets[0]`` nnU-Net's full-resolution target (class indices (B, 1, \*spatial), or the region
          one-hot with ``region_based``, with its trailing ignore channel when ``ignore_label`` is set).
        - The full-resolution output gets the target unchanged, so with hard labels scale 0 is exactly
          nnU-Net's; lower scales get soft targets (see :func:`area_target` for ignored pixels).

    Example:
        >>> import torch
        >>> from softseg.integrations.nnunet.losses import NNUNetRegionCELoss
        >>> wrapper = AreaTargetDeepSupervision(NNUNetRegionCELoss(), (0.8, 0.2))
        >>> outputs = [torch.randn(2, 3, 8, 8), torch.randn(2, 3, 4, 4)]
        >>> labels = torch.randint(0, 3, (2, 1, 8, 8), dtype=torch.int16)
        >>> soft = area_target(labels, (4, 4), num_classes=3)
        >>> per_scale = NNUNetRegionCELoss()
        >>> expected = 0.8 * per_scale(outputs[0], labels) + 0.2 * per_scale(outputs[1], soft)
        >>> torch.allclose(wrapper(outputs, [labels, labels[..., ::2, ::2]]), expected)
        True
    """

    def __init__(
        self,
        loss: nn.Module,
        weight_factors: Sequence[float],
        *,
        region_based: bool = False,
        ignore_label: int | None = None,
    ) -> None:
        super().__init__(loss, weight_factors)
        self.region_based = region_based
        self.ignore_label = ignore_label

    def forward(self, outputs: Sequence[Tensor], targets: Sequence[Tensor]) -> Tensor:
        full = targets[0]
        scaled = [full] + [
            None
            if weight == 0
            else area_target(
                full,
                output.shape[2:],
                num_classes=output.shape[1],
                region_based=self.region_based,
                ignore_label=self.ignore_label,
            )
            for weight, output in zip(self.weight_factors[1:], outputs[1:])
        ]
        return super().forward(outputs, scaled)
