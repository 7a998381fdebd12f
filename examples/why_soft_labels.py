"""Classic soft Dice vs softseg's Dice on a fractional target, then a short fit to soft labels.

Run: bash scripts/main.sh
"""

import torch

import softseg


def classic_soft_dice(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The product form used by most libraries: 1 - 2<x, y> / (|x| + |y|)."""
    return 1 - 2 * (x * y).sum() / (x.sum() + y.sum())


def main() -> None:
    target = torch.tensor([[[0.5]]])  # one pixel, half foreground (B=1, C=1, N=1)
    print("one pixel with target 0.5")
    print(f"{'prediction':>10} {'classic Dice':>13} {'softseg Dice':>13}")
    for t in (0.25, 0.5, 0.75, 1.0):
        x = torch.tensor([[[t]]])
        ours = softseg.dice_loss(x, target, activation="none")
        print(f"{t:>10.2f} {classic_soft_dice(x, target).item():>13.4f} {ours.item():>13.4f}")

    # Fit logits to a soft 2-class target: softseg's Dice recovers the target, classic Dice saturates.
    torch.manual_seed(0)
    soft = torch.rand(2, 1, 16, 16)
    target = torch.cat([1 - soft, soft], 1)
    for name, loss_fn in (
        ("classic", lambda p, y: classic_soft_dice(p[:, 1], y[:, 1])),
        ("softseg", lambda p, y: softseg.dice_loss(p, y, activation="none")),
    ):
        logits = torch.zeros_like(target, requires_grad=True)
        optimizer = torch.optim.Adam([logits], lr=0.1)
        for _ in range(300):
            optimizer.zero_grad()
            loss = loss_fn(logits.softmax(1), target)
            loss.backward()
            optimizer.step()
        error = (logits.softmax(1) - target).abs().mean().item()
        print(f"{name} Dice after 300 steps: mean |prediction - target| = {error:.4f}")


if __name__ == "__main__":
    main()
