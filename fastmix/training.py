"""One-call training steps: SAGE's two-pass step (algorithms.md section 1.1) and the plain
mixed-sample step for the other operators, with AMP autocast, GradScaler and channels_last.

Gradient that reaches the optimiser (after GradScaler's unscale, when a scaler is given):

- `sage_step`, update ratio r:   (1 - r) * dL_clean/dtheta + r * dL_mix/dtheta   (r < 1)
                                 dL_mix/dtheta                                   (r = 1)
  L_clean = loss(model(x), onehot(y)) on the clean batch, L_mix = loss(model(x_mix), t) with
  t = lam * onehot(y) + (1 - lam) * onehot(y[perm]). Both forwards run in train mode (BatchNorm
  statistics update twice, as in the reference). x_mix is a constant for the update: the
  saliency that chose it is detached.
- `mix_step`: dL_mix/dtheta with x_mix and t from the chosen operator ("none": the clean batch
  and its one-hot targets).

`loss` is "bce" (BCELoss on softmax, mean over B x K: the SAGE/PuzzleMix code) or "ce"
(soft-target cross-entropy, mean over B: the CutMix/Mixup code), both from
`fastmix.soft_target_loss`, which computes in float32 whatever the autocast dtype.

Both steps put the model in train mode. With `optimizer=None` a step only accumulates the
gradients above into `.grad` (nothing is zeroed, nothing is stepped; under a GradScaler they stay
scaled), for gradient clipping or accumulation; otherwise it zeroes the gradients first and steps
(through the scaler, if given) at the end.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable

import torch

from .gradient_saliency import LOSSES, saliency, soft_target_loss
from .labels import one_hot
from .operators.boxes import cutmix, cutout, saliencymix
from .operators.mixup import mixup
from .operators.sage import sage_mix
from .result import MixResult

AUTOCAST_DTYPES = (None, torch.float16, torch.bfloat16)

# Operators of `mix_step`, by name; "none" trains on the clean batch.
OPERATORS: dict[str, Callable[..., MixResult] | None] = {
    "none": None, "mixup": mixup, "cutmix": cutmix, "cutout": cutout, "saliencymix": saliencymix,
}

# Arguments the step itself passes to the operator; a caller may not pass them again.
_STEP_OWNED = frozenset({"images", "labels", "x", "y", "grad", "saliency", "generator"})


@dataclass
class StepResult:
    """What one training step computed (all tensors detached).

    loss:         the objective whose gradient was applied: (1 - r) * clean_loss + r * mix_loss
                  for sage_step with r < 1, otherwise mix_loss.
    mix_loss:     the unscaled loss on the mixed batch (on the clean batch for operator "none").
    clean_loss:   the unscaled clean-batch loss of SAGE's saliency pass (None for mix_step).
    logits:       float32 logits of the mixed batch [B, K] (None for a skipped step).
    clean_logits: float32 logits of the clean batch [B, K] (SAGE only; None for mix_step).
    targets:      float32 soft targets of the mixed batch [B, K] (None for a skipped step).
    mix:          the operator's MixResult (None for operator "none" and for a skipped step).
    """

    loss: torch.Tensor
    mix_loss: torch.Tensor
    logits: torch.Tensor | None
    targets: torch.Tensor | None
    mix: MixResult | None = None
    clean_loss: torch.Tensor | None = None
    clean_logits: torch.Tensor | None = None


class _GradientScale(torch.autograd.Function):
    """Identity forward; the backward multiplies the incoming gradient by `scale`.

    `fastmix.saliency` builds and back-propagates the clean loss itself, so GradScaler cannot
    scale that loss; scaling the gradient at the float32 logits is the same operation (the loss
    between the logits and the scalar is float32), and it keeps the clean-pass parameter
    gradients on the scaler's scale, as `scaler.step` expects of every gradient it unscales.
    """

    @staticmethod
    def forward(ctx, logits, scale):
        ctx.save_for_backward(scale)
        return logits.view_as(logits)

    @staticmethod
    def backward(ctx, grad):
        (scale,) = ctx.saved_tensors
        return grad * scale.to(grad.dtype), None


class _StepModel(torch.nn.Module):
    """The user's model run under autocast, returning float32 logits (optionally gradient-scaled).

    Wrapping the forward (instead of the whole step) keeps every backward outside the autocast
    region, as PyTorch recommends. train()/eval() reach the wrapped model as a submodule.
    """

    def __init__(self, model: torch.nn.Module, autocast_dtype: torch.dtype | None,
                 grad_scale: torch.Tensor | None = None):
        super().__init__()
        self.model = model
        self.autocast_dtype = autocast_dtype
        self.grad_scale = grad_scale
        self.train(model.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.autocast_dtype is None:
            context = contextlib.nullcontext()
        else:
            context = torch.autocast(device_type=x.device.type, dtype=self.autocast_dtype)
        with context:
            logits = self.model(x)
        if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != x.shape[0]:
            shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise ValueError(f"the model must return logits [B, num_classes], got {shape}")
        logits = logits.float()
        if self.grad_scale is not None:
            logits = _GradientScale.apply(logits, self.grad_scale)
        return logits


def _check_step_args(model, optimizer, x, y, loss, autocast_dtype, scaler) -> None:
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer or None, got {type(optimizer).__name__}")
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or not x.dtype.is_floating_point:
        got = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be a float [B, C, H, W] tensor, got {got}")
    if isinstance(y, torch.Tensor) and y.device != x.device:
        raise ValueError(f"y is on {y.device} but x is on {x.device}: move the labels with y.to({str(x.device)!r})")
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    if autocast_dtype not in AUTOCAST_DTYPES:
        raise ValueError(f"autocast_dtype must be None, torch.float16 or torch.bfloat16, got {autocast_dtype}")
    if scaler is not None and not isinstance(scaler, torch.amp.GradScaler):
        raise TypeError(f"scaler must be a torch.amp.GradScaler or None, got {type(scaler).__name__}")


def _check_operator_kwargs(kwargs: dict) -> None:
    owned = sorted(_STEP_OWNED & kwargs.keys())
    if owned:
        raise TypeError(f"the step passes {owned} to the operator itself; do not pass them as keyword arguments")


def _backward_and_step(objective: torch.Tensor, optimizer, scaler) -> None:
    if scaler is None:
        objective.backward()
        if optimizer is not None:
            optimizer.step()
        return
    scaler.scale(objective).backward()
    if optimizer is not None:
        scaler.step(optimizer)
        scaler.update()


def _loss_scale(scaler, device: torch.device) -> torch.Tensor | None:
    """The scaler's current scale as a device tensor (no host sync); None without a scaler."""
    if scaler is None or not scaler.is_enabled():
        return None
    return scaler.scale(torch.ones((), device=device))


def sage_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer | None, x: torch.Tensor,
              y: torch.Tensor, *, update_ratio: float, num_classes: int | None = None, loss: str = "bce",
              scaler: torch.amp.GradScaler | None = None, autocast_dtype: torch.dtype | None = None,
              generator: torch.Generator | None = None, eval_mode: bool = False, **sage_kwargs) -> StepResult:
    """One SAGE training iteration (algorithms.md section 1.1).

    1. Clean forward and backward (`fastmix.saliency`): the input gradient gives the saliency; with
       r = update_ratio < 1 the clean loss scaled by (1 - r) is back-propagated into the parameters
       and kept. `eval_mode=True` runs this pass in eval mode (the reference's --eval_mode).
    2. `fastmix.sage_mix(x, y, grad=...)` with `sage_kwargs` (alpha, upper_lambda, rand_pos, ...;
       the CIFAR-10 recipe is upper_lambda=0.6, rand_pos=0.01, update_ratio=0.7; sage_mix's
       defaults are upper_lambda=0.6 and search="auto"). The clean and mixed losses are `loss`,
       "bce" by default as in the SAGE paper (fastmix.soft_target_loss defaults to "ce").
    3. Mixed forward in train mode, loss against the mixed soft targets, scaled by r when r < 1,
       backward, optimiser step.

    x: normalised float images [B, C, H, W] (not modified, needs no requires_grad); y: int labels
    [B] or soft labels [B, K]. num_classes defaults to the model's output width.

    Under a GradScaler the clean pass is scaled like the mixed one. If the scaled clean gradient
    overflows, the saliency is unusable and the step is skipped the way GradScaler skips an
    overflowing step (gradients zeroed, scale times the backoff factor): the returned losses are
    NaN, `mix`, `logits` and `targets` are None. Without a scaler, a non-finite saliency raises
    sage_mix's ValueError.
    """
    _check_step_args(model, optimizer, x, y, loss, autocast_dtype, scaler)
    if not 0.0 <= update_ratio <= 1.0:
        raise ValueError(f"update_ratio must be in [0, 1], got {update_ratio}")
    _check_operator_kwargs(sage_kwargs)
    if optimizer is not None:
        optimizer.zero_grad(set_to_none=True)
    model.train()

    grad_scale = _loss_scale(scaler, x.device)
    clean = saliency(_StepModel(model, autocast_dtype, grad_scale), x, y, loss=loss,
                     update_ratio=update_ratio, eval_mode=eval_mode, num_classes=num_classes)
    input_grad = clean.grad if grad_scale is None else clean.grad / grad_scale
    if grad_scale is not None and not bool(torch.isfinite(input_grad).all()):
        return _skip_overflowing_step(optimizer, scaler, clean)

    classes = num_classes or clean.logits.shape[1]
    mix = sage_mix(x, y, grad=input_grad, generator=generator, **sage_kwargs)
    targets = mix.targets(y, classes)
    logits = _StepModel(model, autocast_dtype)(mix.images)
    mix_loss = soft_target_loss(logits, targets, loss)
    objective = mix_loss if update_ratio == 1.0 else update_ratio * mix_loss
    _backward_and_step(objective, optimizer, scaler)

    total = mix_loss if update_ratio == 1.0 else (1.0 - update_ratio) * clean.loss + update_ratio * mix_loss
    return StepResult(loss=total.detach(), mix_loss=mix_loss.detach(), logits=logits.detach(),
                      targets=targets, mix=mix, clean_loss=clean.loss, clean_logits=clean.logits)


def _skip_overflowing_step(optimizer, scaler, clean) -> StepResult:
    """GradScaler's answer to an overflow, applied before the mixed pass: drop the gradients and
    back off the scale (scaler.update with an explicit new scale needs no recorded step)."""
    if optimizer is not None:
        optimizer.zero_grad(set_to_none=True)
        scaler.update(scaler.get_scale() * scaler.get_backoff_factor())
    nan = torch.full((), float("nan"), device=clean.logits.device)
    return StepResult(loss=nan, mix_loss=nan, logits=None, targets=None,
                      mix=None, clean_loss=nan, clean_logits=clean.logits)


def mix_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer | None, x: torch.Tensor,
             y: torch.Tensor, *, operator: str | Callable[..., MixResult] = "mixup",
             num_classes: int | None = None, loss: str = "ce", label_smoothing: float = 0.0,
             scaler: torch.amp.GradScaler | None = None, autocast_dtype: torch.dtype | None = None,
             generator: torch.Generator | None = None, **operator_kwargs) -> StepResult:
    """One training iteration with a model-free operator: mix, forward, loss, backward, step.

    operator: "none", "mixup", "cutmix", "cutout", "saliencymix", or any callable
    `op(images, labels, generator=..., **operator_kwargs) -> MixResult` (e.g. a partial of
    `fastmix.mixup` with per_sample=True). `operator_kwargs` go to the operator (alpha,
    per_sample, ...; "saliencymix" on normalised x needs mean=/std= of the normalisation or
    value_range=, else it raises rather than clip). Targets are `MixResult.targets(y, num_classes,
    label_smoothing)`; num_classes defaults to the model's output width. For SAGE use sage_step.
    """
    _check_step_args(model, optimizer, x, y, loss, autocast_dtype, scaler)
    _check_operator_kwargs(operator_kwargs)
    if isinstance(operator, str):
        if operator not in OPERATORS:
            hint = " (use fastmix.training.sage_step for SAGE)" if operator == "sage" else ""
            raise ValueError(f"operator must be one of {sorted(OPERATORS)} or a callable, got {operator!r}{hint}")
        operator = OPERATORS[operator]
    elif not callable(operator):
        raise TypeError(f"operator must be a name or a callable returning a MixResult, got {type(operator).__name__}")
    if operator is None and operator_kwargs:
        raise TypeError(f"operator 'none' takes no operator arguments, got {sorted(operator_kwargs)}")
    if optimizer is not None:
        optimizer.zero_grad(set_to_none=True)
    model.train()

    mix = None if operator is None else operator(x, y, generator=generator, **operator_kwargs)
    if mix is not None and not isinstance(mix, MixResult):
        raise TypeError(f"the operator must return a MixResult, got {type(mix).__name__}")
    logits = _StepModel(model, autocast_dtype)(x if mix is None else mix.images)
    classes = num_classes or logits.shape[1]
    if mix is None:
        targets = one_hot(y, classes, label_smoothing).to(logits.device)
    else:
        targets = mix.targets(y, classes, label_smoothing)
    mix_loss = soft_target_loss(logits, targets, loss)
    _backward_and_step(mix_loss, optimizer, scaler)
    return StepResult(loss=mix_loss.detach(), mix_loss=mix_loss.detach(), logits=logits.detach(),
                      targets=targets, mix=mix)


__all__ = ["StepResult", "sage_step", "mix_step", "OPERATORS"]
