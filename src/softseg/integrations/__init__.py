"""Integrations with training frameworks: :mod:`softseg.integrations.nnunet` (nnU-Net v2 trainers).

Each integration imports its framework only when used, so ``import softseg`` never needs it.
"""
