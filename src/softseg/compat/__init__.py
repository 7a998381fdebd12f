"""Drop-in replacements for the losses of other libraries, on the softseg statistics engine.

- :mod:`softseg.compat.monai`: ``monai.losses`` (MONAI 1.6): DiceLoss, MaskedDiceLoss, GeneralizedDiceLoss,
  TverskyLoss, FocalLoss, DiceCELoss, DiceFocalLoss, GeneralizedDiceFocalLoss.
- :mod:`softseg.compat.smp`: ``segmentation_models_pytorch.losses`` (smp 0.6): DiceLoss, JaccardLoss,
  TverskyLoss, FocalLoss, SoftBCEWithLogitsLoss, SoftCrossEntropyLoss.

Switching is an import change (``from softseg.compat.monai import DiceLoss``); the constructor arguments,
defaults, output values and shapes are the reference library's, and every difference is documented in the
class docstrings and in the README section "Coming from MONAI or smp". Neither library is needed at run time.
A peer class outside the soft-label family (MONAI's HausdorffDTLoss, smp's LovaszLoss, ...) is not mirrored:
importing it raises an ImportError that names the peer module to import it from.
"""
