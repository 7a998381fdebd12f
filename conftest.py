"""Settings for every test run (tests/, the doctests of src/ and the README).

Without a CUDA device, Triton's kernels run in its interpreter on the CPU (tests/test_triton.py): the
variable must be set before the kernels are defined. Without Triton, its kernel module is not collected.
"""

import importlib.util
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

collect_ignore = [] if importlib.util.find_spec("triton") else ["src/softseg/kernels/_triton_kernels.py"]
