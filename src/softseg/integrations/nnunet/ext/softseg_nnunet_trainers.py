"""softseg's nnU-Net trainers, re-exported for nnU-Net's ``nnUNet_extTrainer`` lookup (see the folder's __init__)."""

from softseg.integrations.nnunet.trainers import *  # noqa: F401,F403  (the lookup reads attributes by name)
from softseg.integrations.nnunet.trainers import __all__  # noqa: F401
