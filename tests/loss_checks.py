"""Checks shared by the loss test modules: value and gradient in one call, and P2's "no descent" property."""

import torch


def value_and_grad(loss_fn, logits, target):
    """loss_fn(z, target) at z = logits and the gradient of its sum with respect to z."""
    z = logits.clone().requires_grad_(True)
    value = loss_fn(z, target)
    (grad,) = torch.autograd.grad(value.sum(), z)
    return value, grad


def assert_zero_and_minimal_at(loss_fn, start, target, seed, *, moves=4, radius=0.1):
    """loss_fn(start, target) is 0, and neither a normalised gradient step nor random moves lower it."""
    at_target, grad = value_and_grad(loss_fn, start, target)
    assert abs(at_target.item()) < 1e-6, at_target
    generator = torch.Generator().manual_seed(seed)
    steps = [-grad / grad.abs().max().clamp_min(1e-30) * radius] + [
        radius * torch.randn(start.shape, generator=generator, dtype=start.dtype) for _ in range(moves)
    ]
    for step in steps:
        assert loss_fn(start + step, target).item() >= at_target.item() - 1e-9
    assert loss_fn(start + steps[1], target).item() > 1e-6  # a move away from the target does cost
