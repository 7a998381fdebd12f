"""nnU-Net v2 trainers with softseg's losses (the ``nnunet`` extra: ``pip install 'softseg[nnunet]'``).

- :mod:`~softseg.integrations.nnunet.trainers`: ``nnUNetTrainerSoftsegDiceCE``, ``...JaccardCE``,
  ``...TverskyCE`` (area deep-supervision targets) and their ``_nearestDS`` twins; imports nnU-Net.
- :mod:`~softseg.integrations.nnunet.losses`: the per-scale loss on nnU-Net's targets (no nnU-Net needed).
- :mod:`~softseg.integrations.nnunet.targets`, :mod:`~softseg.integrations.nnunet.deep_supervision`: area
  targets for deep supervision, and nnU-Net's wrapper fed with them.
- :mod:`~softseg.integrations.nnunet.commands`: ``softseg-nnunet-train``/``-predict`` and ``softseg nnunet``.
- ``ext/``: the folder for nnU-Net's ``nnUNet_extTrainer`` (:func:`ext_trainer_path`); it re-exports the trainers.

Importing this package does not import nnU-Net.
"""

from softseg.integrations.nnunet.environment import check_nnunet, ext_trainer_path

__all__ = ["check_nnunet", "ext_trainer_path"]
