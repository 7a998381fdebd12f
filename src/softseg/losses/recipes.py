r"""Mixed and staged losses from the literature, each a ready :class:`~softseg.CompoundLoss`.

Every term is correct on soft labels (softseg's region losses, and the cross-entropy, which is minimised
at the target), so the recipes train on averaged raters, smoothed labels or a teacher's probabilities as
they do on hard labels. The staged ones need the counter advanced: call ``loss.step()`` once per
optimisation step (or per epoch, with ``steps`` counted in epochs).

=================================  ==============================================  ==========================
recipe                             weights                                         source
=================================  ==============================================  ==========================
:func:`jaccard_ce_recipe`          0.25 CE + 0.75 Jaccard, constant                Wang et al., NeurIPS 2023
:func:`ce_warmup_recipe`           CE 1 -> 0, region 0 -> 1 (cosine handover)      Berman et al., CVPR 2018
:func:`l2_to_l1_recipe`            Dice L2 1 -> 0, Dice L1 0 -> 1 (cosine)         V-Net 2016; Wang et al. 2023
:func:`region_ramp_recipe`         CE 1 -> 0.01, region 0 -> 0.99 (linear)         Kervadec et al., MIDL 2019
=================================  ==============================================  ==========================
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from softseg import schedules
from softseg.losses.compound_loss import CompoundLoss
from softseg.losses.region import DiceLoss, JaccardLoss

Loss = Callable[[Tensor, Tensor], Tensor]


def jaccard_ce_recipe() -> CompoundLoss:
    r"""0.25 cross-entropy + 0.75 Jaccard metric loss, constant: the mix of the Jaccard metric losses paper.

    .. math::

        L = 0.25\, \mathrm{CE} + 0.75\, \mathrm{JML}

    Source: Z. Wang, X. Ning, M. B. Blaschko, "Jaccard Metric Losses: Optimizing the Jaccard Index with
    Soft Labels", NeurIPS 2023; the authors' JDTLosses repository uses ``ce_weight: 0.25``,
    ``jdt_weight: 0.75`` in every configuration and its FAQ recommends the 0.25 : 0.75 ratio over 1 : 1
    across natural, aerial and medical images.

    Convention:
        Terms ``ce`` (``torch.nn.CrossEntropyLoss``) and ``jaccard`` (:class:`softseg.JaccardLoss`, softmax,
        global); logits (B, C, \*spatial), index or probability targets; one shared softmax.

    Example:
        >>> import torch
        >>> loss = jaccard_ce_recipe()
        >>> loss.weights_at()
        {'ce': 0.25, 'jaccard': 0.75}
        >>> loss(torch.zeros(1, 2, 4), torch.tensor([[0, 0, 1, 1]]))       # 0.25 log 2 + 0.75 * 2/3
        tensor(0.6733)
    """
    return CompoundLoss(ce=nn.CrossEntropyLoss(), jaccard=JaccardLoss(), weights={"ce": 0.25, "jaccard": 0.75})


def ce_warmup_recipe(*, steps: int, begin: int = 0, region: Loss | None = None) -> CompoundLoss:
    r"""Cross-entropy first, handed over to a region loss: CE 1 -> 0 and region 0 -> 1 along a cosine.

    .. math::

        L_t = (1 - s(t))\, \mathrm{CE} + s(t)\, \ell_{region},\qquad
        s(t) = \tfrac{1}{2}\big(1 - \cos(\pi \min(\max(t - \text{begin}, 0) / \text{steps}, 1))\big)

    Source: M. Berman, A. Rannen Triki, M. B. Blaschko, "The Lovasz-Softmax loss", CVPR 2018, trained
    with cross-entropy and then fine-tuned with the region (IoU) loss; the JDTLosses FAQ cites this schedule.
    Cross-entropy's gradient is well-behaved from a random start; the region loss then optimises the metric.
    The smooth handover replaces the hard switch.

    Convention:
        ``steps`` (>= 1) of handover starting at ``begin`` (>= 0); ``region``: the loss taken over
        (default :class:`softseg.DiceLoss`). Terms ``ce`` and ``region``.

    Example:
        >>> loss = ce_warmup_recipe(steps=1000, begin=500)
        >>> loss.weights_at(0), loss.weights_at(1000), loss.weights_at(1500)
        ({'ce': 1.0, 'region': 0.0}, {'ce': 0.5, 'region': 0.5}, {'ce': 0.0, 'region': 1.0})
    """
    return CompoundLoss(
        ce=nn.CrossEntropyLoss(),
        region=DiceLoss() if region is None else region,
        weights={
            "ce": schedules.cosine(1.0, 0.0, steps=steps, begin=begin),
            "region": schedules.cosine(0.0, 1.0, steps=steps, begin=begin),
        },
    )


def l2_to_l1_recipe(*, steps: int, begin: int = 0) -> CompoundLoss:
    r"""The L2 (squared) Dice early and the L1 (min/max) Dice late, handed over along a cosine.

    .. math::

        L_t = (1 - s(t))\, \mathrm{DML}_{L2} + s(t)\, \mathrm{DML}_{L1}

    with s(t) as in :func:`ce_warmup_recipe`. Both forms are correct on soft labels (0 exactly at the
    target): the L2 form, tp = <x, y> over ||x||^2 + ||y||^2 (F. Milletari, N. Navab, S.-A. Ahmadi, "V-Net",
    3DV 2016), is smooth everywhere; the L1 form, tp = sum min(x, y) (Z. Wang et al., "Dice Semimetric
    Losses", MICCAI 2023), has a kink at the target but equals the soft Dice that is evaluated, and usually
    segments better. This staging is softseg's own hybrid of the two, not a published schedule.

    Convention:
        ``steps`` (>= 1) and ``begin`` (>= 0) as :func:`ce_warmup_recipe`. Terms ``dice_l2``
        (``DiceLoss(norm=2)``) and ``dice_l1`` (``DiceLoss()``); softmax, global.

    Example:
        >>> import torch
        >>> loss = l2_to_l1_recipe(steps=100)
        >>> loss.weights_at(0), loss.weights_at(100)
        ({'dice_l2': 1.0, 'dice_l1': 0.0}, {'dice_l2': 0.0, 'dice_l1': 1.0})
        >>> soft = torch.tensor([[[0.7, 0.2], [0.3, 0.8]]])
        >>> float(loss(soft.log(), soft, step=50)) < 1e-6          # both terms are 0 at a soft target
        True
    """
    return CompoundLoss(
        dice_l2=DiceLoss(norm=2),
        dice_l1=DiceLoss(),
        weights={
            "dice_l2": schedules.cosine(1.0, 0.0, steps=steps, begin=begin),
            "dice_l1": schedules.cosine(0.0, 1.0, steps=steps, begin=begin),
        },
    )


def region_ramp_recipe(*, steps: int, floor: float = 0.01, region: Loss | None = None) -> CompoundLoss:
    r"""A region loss ramped in against cross-entropy: CE 1 -> ``floor``, region 0 -> 1 - ``floor``, linearly.

    .. math::

        L_t = \alpha(t)\, \mathrm{CE} + (1 - \alpha(t))\, \ell_{region},\qquad
        \alpha(t) = 1 - (1 - \text{floor}) \min(t / \text{steps}, 1)

    Source: H. Kervadec et al., "Boundary loss for highly unbalanced segmentation", MIDL 2019 (Medical
    Image Analysis 2021): the "rebalance" strategy starts from the well-behaved loss alone and moves its
    weight to the second loss (alpha decreased by 0.01 per epoch down to 0.01, so ``steps=99`` counted in
    epochs reproduces it). Here the well-behaved start is cross-entropy and the ramped-in loss a region loss.

    Convention:
        ``steps`` >= 1; ``floor`` in [0, 1]: the share cross-entropy keeps at the end; ``region``: default
        :class:`softseg.DiceLoss`. Terms ``ce`` and ``region``.

    Example:
        >>> loss = region_ramp_recipe(steps=99)
        >>> loss.weights_at(0), loss.weights_at(99)
        ({'ce': 1.0, 'region': 0.0}, {'ce': 0.01, 'region': 0.99})
    """
    floor = schedules.constant(floor)(0)
    if not 0 <= floor <= 1:
        raise ValueError(f"floor must lie in [0, 1]; got {floor}")
    return CompoundLoss(
        ce=nn.CrossEntropyLoss(),
        region=DiceLoss() if region is None else region,
        weights={
            "ce": schedules.linear(1.0, floor, steps=steps),
            "region": schedules.linear(0.0, 1.0 - floor, steps=steps),
        },
    )
