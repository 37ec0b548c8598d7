"""The pieces of one training loop: an optimisation step with on-the-fly augmentation, validation, and a moving
average of the weights."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from rfseg.blocks.augment import dihedral_batch


def hard_dice_counts(logits: torch.Tensor, masks: torch.Tensor) -> tuple[float, float]:
    """(2 |pred ∩ truth|, |pred| + |truth|) of the arg-max prediction, pooled over a batch."""
    pred = logits.argmax(1) == 1
    t = masks.bool()
    return float(2 * (pred & t).sum()), float(pred.sum() + t.sum())


def validate(model, images: torch.Tensor, masks: torch.Tensor, batch_size: int, amp) -> tuple[float, float]:
    """(mean cross-entropy per patch, pooled hard dice) on non-augmented patches (n, 1, H, W) with masks (n, H, W)."""
    model.eval()
    loss_sum, inter, total = 0.0, 0.0, 0.0
    with torch.no_grad(), amp():
        for i in range(0, len(images), batch_size):
            x, y = images[i:i + batch_size], masks[i:i + batch_size]
            logits = model(x).float()
            loss_sum += float(F.cross_entropy(logits, y, reduction="sum")) / y[0].numel()
            a, b = hard_dice_counts(logits, y)
            inter, total = inter + a, total + b
    return loss_sum / max(len(images), 1), (inter / total if total else 1.0)


def train_step(model, opt, amp, memfmt, x_all, y_all, batch_idx, transforms) -> torch.Tensor:
    """One optimisation step on patches ``x_all[batch_idx]`` (already on the device), each in its dihedral form
    ``transforms[i]``, augmented on the fly on tensors. Returns the detached batch loss."""
    x = dihedral_batch(x_all[batch_idx], transforms).contiguous(memory_format=memfmt)
    y = dihedral_batch(y_all[batch_idx][:, None], transforms)[:, 0]
    with amp():
        loss = F.cross_entropy(model(x).float(), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach()


class WeightAverage:
    """An exponential moving average of a model's weights and batch-norm statistics (Polyak averaging), updated after
    every optimisation step; ``model`` is the averaged copy. After ``halflife_steps`` steps an update has half the
    weight it had when it was made. The average starts as a copy of the model."""

    def __init__(self, model: torch.nn.Module, halflife_steps: float):
        self.model = copy.deepcopy(model).eval()
        self.decay = 0.5 ** (1 / halflife_steps)

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        floats, counts = [], []
        for mine, theirs in zip(self.model.state_dict().values(), model.state_dict().values()):
            (floats if mine.is_floating_point() else counts).append((mine, theirs))
        torch._foreach_lerp_([m for m, _ in floats], [t for _, t in floats], 1 - self.decay)
        for mine, theirs in counts:  # batch norm's step counters
            mine.copy_(theirs)
