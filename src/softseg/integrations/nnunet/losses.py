r"""softseg's region + cross-entropy loss on the targets nnU-Net's data pipeline produces, on nnU-Net's scale.

nnU-Net v2 hands its loss one output and one target per deep-supervision scale: class indices (B, 1,
\*spatial) (int16, the ignore label where nothing counts) for softmax training, or a bool one-hot of the
regions (B, R, \*spatial) with a trailing ignore channel for region-based (sigmoid) training. This module
accepts those and the soft versions of them that area downsampling makes
(:mod:`softseg.integrations.nnunet.targets`), and computes :func:`softseg.region_ce_loss` with the
options nnU-Net's own ``_build_loss`` uses. It needs no nnU-Net.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from softseg._checks import check_choice, check_number
from softseg.losses.compound import REGIONS, RegionCELoss, region_ce_loss

#: nnU-Net's Dice smoothing is 1e-5 on (2 tp + s) / (2 tp + fp + fn + s); softseg's Tversky index adds s to
#: tp, so s = 1e-5 / 2 gives nnU-Net's Dice exactly (and the same small constant for Jaccard and Tversky).
NNUNET_SMOOTH = 0.5e-5


class NNUNetRegionCELoss(nn.Module):
    r"""softseg's region + cross-entropy loss for one deep-supervision scale of nnU-Net, on nnU-Net's value scale.

    .. math::

        L = -\lambda_{region}\, \mathrm{mean}_c\, T_c + \lambda_{ce}\, \mathrm{CE},\qquad
        T_c = \frac{tp_c + s}{tp_c + \alpha fp_c + \beta fn_c + s},\quad tp = \sum \min(p, y)

    which is :func:`softseg.region_ce_loss` minus ``lambda_region`` (nnU-Net's Dice term is ``-Dice``; the
    constant changes no gradient). With ``region="dice"`` and the default ``smooth`` this equals nnU-Net's
    ``DC_and_CE_loss`` + ``MemoryEfficientSoftDiceLoss`` (softmax) and ``DC_and_BCE_loss`` (regions) on hard
    labels, value and gradient; on soft targets it is minimised at the target, where nnU-Net's is not.

    Options mirror nnU-Net 2.8's ``_build_loss``: ``region_based`` (sigmoid over regions, background
    region scored, binary cross-entropy) or softmax (background class 0 left out of the region term,
    cross-entropy over all classes); ``batch_dice`` (the plans' choice) sums the statistics over the batch
    (``aggregation="global"``), otherwise one score per (image, class) (``"image"``); ``distributed``
    sums them over the data-parallel ranks (:mod:`softseg.distributed`; nnU-Net's gather-with-gradient rule:
    each rank's logits get N times their slice of the gradient and DDP's average restores it).

    Convention:
        - ``output``: logits (B, C, \*spatial) of one scale, any float dtype.
        - ``target``, softmax: class indices (B, 1, \*spatial) or (B, \*spatial), any integer dtype, with
          ``ignore_label`` where nothing counts; or class probabilities (B, C, \*spatial) (area targets),
          where an all-zero vector marks a cell without any counted pixel (left out when ``ignore_label``
          is set).
        - ``target``, ``region_based``: region one-hot (B, R, \*spatial), bool or float in [0, 1], plus a
          trailing channel (1 = ignored) when ``ignore_label`` is set. As in nnU-Net, the masked binary
          cross-entropy is divided by the counted pixels (not pixel-region pairs), so with an ignore label
          it weighs R times the unmasked one; this loss keeps that balance.
        - Ignored pixels leave both terms; nothing counted gives the region term's -1 (T = 1) and CE 0,
          never NaN. Returns a scalar (float32 for half-precision logits).

    Example:
        >>> logits = torch.tensor([[[[2.0, -1.0]], [[-2.0, 1.0]]]])        # (B=1, C=2, 1, 2)
        >>> labels = torch.tensor([[[[0, 1]]]], dtype=torch.int16)         # (B, 1, 1, 2), nnU-Net's dtype
        >>> loss = NNUNetRegionCELoss(region="dice", batch_dice=True)
        >>> value = loss(logits, labels)                                   # -Dice(class 1) + CE
        >>> p = logits.softmax(1)[0, 1, 0]
        >>> dice = 2 * p[1] / (p.sum() + 1)
        >>> ce = torch.nn.functional.cross_entropy(logits[:, :, 0], labels[:, 0, 0].long())
        >>> torch.allclose(value, -dice + ce)
        True
    """

    def __init__(
        self,
        *,
        region: str = "dice",
        alpha: float | None = None,
        beta: float | None = None,
        lambda_region: float = 1.0,
        lambda_ce: float = 1.0,
        smooth: float = NNUNET_SMOOTH,
        region_based: bool = False,
        batch_dice: bool = True,
        ignore_label: int | None = None,
        distributed: bool = False,
    ) -> None:
        super().__init__()
        check_choice("region", region, tuple(REGIONS))
        for name, flag in (("region_based", region_based), ("batch_dice", batch_dice), ("distributed", distributed)):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be a bool; got {type(flag).__name__}")
        if ignore_label is not None and (isinstance(ignore_label, bool) or not isinstance(ignore_label, int)):
            raise TypeError(f"ignore_label must be an int or None; got {type(ignore_label).__name__}")
        self.region_based = region_based
        self.ignore_label = ignore_label
        self.lambda_region = check_number("lambda_region", lambda_region, minimum=0.0)
        self.lambda_ce = check_number("lambda_ce", lambda_ce, minimum=0.0)
        self.options = dict(
            region=region,
            lambda_region=self.lambda_region,
            smooth=check_number("smooth", smooth, minimum=0.0),
            activation="sigmoid" if region_based else "softmax",
            include_background=region_based,  # nnU-Net: do_bg=True for regions, False for softmax classes
            aggregation="global" if batch_dice else "image",
            distributed=distributed,
        )
        if region == "tversky":
            self.options.update(alpha=0.5 if alpha is None else alpha, beta=0.5 if beta is None else beta)
        elif alpha is not None or beta is not None:
            raise TypeError(f"region={region!r} fixes alpha and beta; got alpha={alpha}, beta={beta} (use region='tversky')")
        RegionCELoss(lambda_ce=self.lambda_ce, **self.options)  # validates every option now, not at the first batch

    def forward(self, output: Tensor, target: Tensor) -> Tensor:
        mask, ignore_index, lambda_ce = None, None, self.lambda_ce
        if self.region_based:
            if self.ignore_label is not None:
                mask = target[:, -1:] == 0  # the trailing channel marks ignored pixels (bool or float)
                target = target[:, :-1]
                lambda_ce = self.lambda_ce * output.shape[1]  # nnU-Net divides the masked BCE sum by pixels
            target = target if target.is_floating_point() else target.float()
        elif target.is_floating_point():  # area targets: probabilities, all-zero where nothing counted
            if self.ignore_label is not None:
                mask = target.sum(1, keepdim=True) > 0
        else:
            ignore_index = self.ignore_label
        loss = region_ce_loss(output, target, lambda_ce=lambda_ce, ignore_index=ignore_index, mask=mask, **self.options)
        return loss - self.lambda_region

    def extra_repr(self) -> str:
        options = dict(self.options, lambda_ce=self.lambda_ce, ignore_label=self.ignore_label)
        return ", ".join(f"{key}={value!r}" for key, value in options.items())
