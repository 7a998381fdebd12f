"""Shared test settings: small hypothesis budgets so the suite stays within minutes on two cores."""

import os

import torch
from hypothesis import HealthCheck, settings

settings.register_profile(
    "softseg",
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.register_profile("thorough", parent=settings.get_profile("softseg"), max_examples=500)
settings.load_profile(os.environ.get("SOFTSEG_HYPOTHESIS_PROFILE", "softseg"))

torch.set_num_threads(1)  # pytest-xdist runs two workers on two cores

if not torch.cuda.is_available():  # the Triton kernels' tests (test_triton.py) run in Triton's interpreter
    os.environ.setdefault("TRITON_INTERPRET", "1")
