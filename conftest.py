"""Settings for every test run (tests/, the doctests of src/ and the README).

Without a CUDA device, Triton's kernels run in its interpreter on the CPU (tests/test_triton.py): the
variable must be set before the kernels are defined. Without Triton, its kernel module is not collected;
without nnU-Net, neither are the modules of softseg's nnU-Net trainers.
"""

import importlib.util
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

collect_ignore = [] if importlib.util.find_spec("triton") else ["src/softseg/kernels/_triton_kernels.py"]

# The nnU-Net trainers import nnU-Net, which lives in its own environment (scripts/test_nnunet.sh).
if importlib.util.find_spec("nnunetv2") is None:
    collect_ignore += [
        "src/softseg/integrations/nnunet/trainers.py",
        "src/softseg/integrations/nnunet/deep_supervision.py",
        "src/softseg/integrations/nnunet/ext/softseg_nnunet_trainers.py",
    ]
