r"""nnU-Net v2 trainers with softseg's losses: ``-tr nnUNetTrainerSoftsegDiceCE`` and its siblings.

Each trainer is nnU-Net 2.8's ``nnUNetTrainer`` with one method replaced, ``_build_loss``, the way nnU-Net's
own loss variants swap the loss. Everything else (network, augmentation, schedule, validation,
checkpoints, inference) is nnU-Net's. The loss mirrors what nnU-Net's ``_build_loss`` builds:

- softmax training with the background class left out of the region term, or region-based training
  (sigmoid, every region scored, binary cross-entropy) when the dataset defines regions;
- the ignore label (index targets) or ignore channel (regions) removed from both terms;
- ``batch_dice`` from the plans: statistics summed over the batch, else one score per image;
- under DDP with batch Dice, the statistics summed over all ranks (``distributed=True``), with the gradient
  rule of nnU-Net's ``AllGatherGrad``;
- the deep-supervision weights nnU-Net's own ``_build_loss`` gives (1/2^k normalised, the lowest output
  0, or 1e-6 under DDP without torch.compile).

nnU-Net compiles its Dice term where it compiles the network (CUDA by default, ``nnUNet_compile``). The
Softseg trainers compile the network there too, but not the loss unless ``compile_loss = True``: softseg's
loss is already fused (Triton kernels on CUDA), so compiling it gains little, and the Triton kernels under
torch.compile are tested on the CPU (Triton's interpreter) but have not yet run on a GPU. With
``compile_loss = True`` the loss is compiled exactly where nnU-Net compiles its own (softseg's fused
statistics are custom operators, so it compiles without graph breaks).

What differs: softseg's region term (tp = sum min(p, y), correct for soft targets, equal to nnU-Net's
on hard ones) and, by default, deep-supervision targets averaged from the full-resolution target on the
device (``ds_targets = "area"``) instead of nnU-Net's nearest-neighbour ones (the ``_nearestDS`` trainers).
"""

from __future__ import annotations

from typing import ClassVar

from softseg.integrations.nnunet.environment import check_nnunet

check_nnunet()  # before importing nnU-Net: a clear message for a missing extra or nnunetv2 < 2.8

import torch  # noqa: E402
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper  # noqa: E402
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer  # noqa: E402
from torch import nn  # noqa: E402

from softseg._checks import check_choice  # noqa: E402
from softseg.integrations.nnunet.deep_supervision import AreaTargetDeepSupervision  # noqa: E402
from softseg.integrations.nnunet.losses import NNUNET_SMOOTH, NNUNetRegionCELoss  # noqa: E402

DS_TARGETS = ("area", "nearest")


class nnUNetTrainerSoftsegBase(nnUNetTrainer):
    r"""nnU-Net's trainer with :class:`~softseg.integrations.nnunet.losses.NNUNetRegionCELoss`; set by class attributes.

    .. math::

        L = \sum_k w_k \Big(-\lambda_{region}\, \mathrm{mean}_c\, T_c(o_k, y_k) + \lambda_{ce}\, \mathrm{CE}(o_k, y_k)\Big)

    with w_k nnU-Net's deep-supervision weights and y_k the target of output k: area-downsampled from the
    full-resolution target (``ds_targets = "area"``) or nnU-Net's nearest-neighbour one (``"nearest"``).

    Class attributes (a subclass changes the recipe; nnU-Net instantiates trainers by name, so there are
    no constructor options): ``region`` (``"dice"``, ``"jaccard"``, ``"tversky"``), ``alpha``/``beta``
    (Tversky's false-positive/false-negative weights), ``lambda_region``, ``lambda_ce``, ``smooth``
    (default 5e-6, nnU-Net's 1e-5 on its 2 tp scale), ``ds_targets``, ``compile_loss`` (default False; True
    compiles the loss where nnU-Net compiles its own). This base class is Dice + CE; it is not
    re-exported for ``-tr``, use the named trainers.

    Convention:
        - Everything but ``_build_loss`` is nnU-Net's ``nnUNetTrainer`` (constructor signature included).
        - The loss takes nnU-Net's outputs and targets as its own loss does (lists under deep supervision),
          returns a scalar on nnU-Net's scale (the region term enters as -T, as nnU-Net's -Dice).
        - A bad class attribute raises ``ValueError``/``TypeError`` naming it, when the loss is built.

    Example:
        >>> nnUNetTrainerSoftsegBase.region, nnUNetTrainerSoftsegBase.ds_targets
        ('dice', 'area')
    """

    region: ClassVar[str] = "dice"
    alpha: ClassVar[float | None] = None
    beta: ClassVar[float | None] = None
    lambda_region: ClassVar[float] = 1.0
    lambda_ce: ClassVar[float] = 1.0
    smooth: ClassVar[float] = NNUNET_SMOOTH
    ds_targets: ClassVar[str] = "area"
    compile_loss: ClassVar[bool] = False

    def _build_loss(self) -> nn.Module:
        check_choice("ds_targets", self.ds_targets, DS_TARGETS)
        if not isinstance(self.compile_loss, bool):
            raise TypeError(f"compile_loss must be a bool; got {type(self.compile_loss).__name__}")
        batch_dice = bool(self.configuration_manager.batch_dice)
        loss: nn.Module = NNUNetRegionCELoss(
            region=self.region,
            alpha=self.alpha,
            beta=self.beta,
            lambda_region=self.lambda_region,
            lambda_ce=self.lambda_ce,
            smooth=self.smooth,
            region_based=self.label_manager.has_regions,
            batch_dice=batch_dice,
            ignore_label=self.label_manager.ignore_label,
            distributed=self.is_ddp and batch_dice,  # nnU-Net gathers only for batch Dice
        )
        if self.compile_loss and self._do_i_compile():
            loss = torch.compile(loss)
        # nnU-Net's own _build_loss decides the deep-supervision weights (its DDP special case included).
        nnunet_loss = super()._build_loss()
        if not isinstance(nnunet_loss, DeepSupervisionWrapper):
            return loss
        if self.ds_targets == "nearest":
            return DeepSupervisionWrapper(loss, nnunet_loss.weight_factors)
        return AreaTargetDeepSupervision(
            loss,
            nnunet_loss.weight_factors,
            region_based=self.label_manager.has_regions,
            ignore_label=self.label_manager.ignore_label,
        )


class nnUNetTrainerSoftsegDiceCE(nnUNetTrainerSoftsegBase):
    r"""Dice + cross-entropy (weights 1 and 1, as nnU-Net's default), area deep-supervision targets.

    .. math::

        \ell = -\mathrm{Dice} + \mathrm{CE},\qquad \mathrm{Dice}_c = \frac{2\, tp_c + 2s}{|p_c| + |y_c| + 2s}

    Convention:
        As :class:`nnUNetTrainerSoftsegBase`. On hard labels with ``ds_targets = "nearest"``
        (:class:`nnUNetTrainerSoftsegDiceCE_nearestDS`) the loss equals nnU-Net's default
        ``DC_and_CE_loss``/``DC_and_BCE_loss`` in ``DeepSupervisionWrapper``, value and gradient.

    Example:
        >>> nnUNetTrainerSoftsegDiceCE.lambda_region, nnUNetTrainerSoftsegDiceCE.lambda_ce
        (1.0, 1.0)
    """


class nnUNetTrainerSoftsegJaccardCE(nnUNetTrainerSoftsegBase):
    r"""Jaccard metric loss + cross-entropy with the Jaccard Metric Losses' weights 0.75 and 0.25.

    .. math::

        \ell = -0.75\, \mathrm{mean}_c \frac{tp_c + s}{tp_c + fp_c + fn_c + s} + 0.25\, \mathrm{CE}

    The weights are the recipe of Wang, Ning and Blaschko, "Jaccard Metric Losses: Optimizing the Jaccard
    Index with Soft Labels" (NeurIPS 2023), as released in their code (JDTLosses,
    ``configs/losses/jaccard_*.yaml``: ``ce_weight: 0.25``, ``jdt_weight: 0.75``). Aggregation,
    background and smoothing follow nnU-Net's plans as in the other trainers.

    Convention:
        As :class:`nnUNetTrainerSoftsegBase`.

    Example:
        >>> nnUNetTrainerSoftsegJaccardCE.lambda_region, nnUNetTrainerSoftsegJaccardCE.lambda_ce
        (0.75, 0.25)
    """

    region = "jaccard"
    lambda_region = 0.75
    lambda_ce = 0.25


class nnUNetTrainerSoftsegTverskyCE(nnUNetTrainerSoftsegBase):
    r"""Tversky loss (false positives 0.3, false negatives 0.7) + cross-entropy, weights 1 and 1.

    .. math::

        \ell = -\mathrm{mean}_c \frac{tp_c + s}{tp_c + 0.3\, fp_c + 0.7\, fn_c + s} + \mathrm{CE}

    alpha = 0.3, beta = 0.7 are the values Salehi, Erdogmus and Gholipour found best for lesion
    segmentation ("Tversky loss function for image segmentation using 3D fully convolutional deep
    networks", MLMI 2017): missing foreground costs more than over-segmenting it. Subclass and set
    ``alpha``/``beta`` for another trade-off.

    Convention:
        As :class:`nnUNetTrainerSoftsegBase`.

    Example:
        >>> nnUNetTrainerSoftsegTverskyCE.alpha, nnUNetTrainerSoftsegTverskyCE.beta
        (0.3, 0.7)
    """

    region = "tversky"
    alpha = 0.3
    beta = 0.7


class nnUNetTrainerSoftsegDiceCE_nearestDS(nnUNetTrainerSoftsegDiceCE):
    r""":class:`nnUNetTrainerSoftsegDiceCE` on nnU-Net's nearest-neighbour deep-supervision targets.

    .. math::

        L = \sum_k w_k\, \ell(o_k, \mathrm{nearest}_k(y))

    Convention:
        As :class:`nnUNetTrainerSoftsegBase` with ``ds_targets = "nearest"``.

    Example:
        >>> nnUNetTrainerSoftsegDiceCE_nearestDS.ds_targets
        'nearest'
    """

    ds_targets = "nearest"


class nnUNetTrainerSoftsegJaccardCE_nearestDS(nnUNetTrainerSoftsegJaccardCE):
    r""":class:`nnUNetTrainerSoftsegJaccardCE` on nnU-Net's nearest-neighbour deep-supervision targets.

    .. math::

        L = \sum_k w_k\, \ell(o_k, \mathrm{nearest}_k(y))

    Convention:
        As :class:`nnUNetTrainerSoftsegBase` with ``ds_targets = "nearest"``.

    Example:
        >>> nnUNetTrainerSoftsegJaccardCE_nearestDS.ds_targets
        'nearest'
    """

    ds_targets = "nearest"


class nnUNetTrainerSoftsegTverskyCE_nearestDS(nnUNetTrainerSoftsegTverskyCE):
    r""":class:`nnUNetTrainerSoftsegTverskyCE` on nnU-Net's nearest-neighbour deep-supervision targets.

    .. math::

        L = \sum_k w_k\, \ell(o_k, \mathrm{nearest}_k(y))

    Convention:
        As :class:`nnUNetTrainerSoftsegBase` with ``ds_targets = "nearest"``.

    Example:
        >>> nnUNetTrainerSoftsegTverskyCE_nearestDS.ds_targets
        'nearest'
    """

    ds_targets = "nearest"


__all__ = [
    "nnUNetTrainerSoftsegDiceCE",
    "nnUNetTrainerSoftsegDiceCE_nearestDS",
    "nnUNetTrainerSoftsegJaccardCE",
    "nnUNetTrainerSoftsegJaccardCE_nearestDS",
    "nnUNetTrainerSoftsegTverskyCE",
    "nnUNetTrainerSoftsegTverskyCE_nearestDS",
]
