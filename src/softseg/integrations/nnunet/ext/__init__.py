"""The folder put on nnU-Net's ``nnUNet_extTrainer`` path: it only re-exports softseg's trainers.

nnU-Net imports each module of this folder under its bare name and drops it from ``sys.modules`` after
the lookup, so the classes themselves live in :mod:`softseg.integrations.nnunet.trainers` (importable,
picklable by that name) and ``softseg_nnunet_trainers.py`` here only re-exports them.
"""
