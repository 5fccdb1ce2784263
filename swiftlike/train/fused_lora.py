"""A fused forward/backward for PEFT's plain LoRA linear layers.

PEFT computes `base(x) + lora_B(lora_A(dropout(x))) * scaling` as five autograd ops; on a CPU the extra
elementwise passes (scale, add, and their backward twins, each over a [tokens, out_features] tensor) cost more
than the rank-r matmuls themselves. Here the LoRA term is accumulated into the base output in place
(`addmm_`) and the backward writes the input gradient with one more `addmm_`: same parameters, same maths
(dropout included, drawn from the same RNG stream), fewer passes over memory. Layers that are not plain LoRA
(DoRA, LoRA bias, several adapters, merged, quantized bases, autocast) keep PEFT's own forward. On the CPU in
fp32 the frozen base weights can also run through oneDNN-packed copies (`pack_weights`).
"""
from __future__ import annotations

import types

import torch

from .cpu_packing import can_pack_weights
from .cpu_packing import packed as packed_weights


class LoraLinearFunction(torch.autograd.Function):
    """y = x W^T + b + s (dropout(x) A^T) B^T with gradients for x, A, B (and W, b when they train).

    Dropout draws its mask exactly as `nn.Dropout` does (same RNG stream), so a seeded run matches PEFT's."""

    @staticmethod
    def forward(ctx, x2, weight, bias, lora_a, lora_b, scaling, dropout_p, packed=None):
        # 2-D in and out: the caller reshapes outside, so the output is no view made inside a custom Function
        # (which autograd would forbid modifying in place, as RL trainers do with logits)
        keep = None
        if dropout_p > 0:
            noise = torch.empty_like(x2).bernoulli_(1 - dropout_p)
            keep = noise.bool()
            xd = x2 * noise.div_(1 - dropout_p)
        else:
            xd = x2
        h = xd @ lora_a.t()
        if packed is not None:
            y = torch.ops.mkldnn._linear_pointwise(x2, packed[0], bias, "none", [], "")
        else:
            y = torch.addmm(bias, x2, weight.t()) if bias is not None else x2 @ weight.t()
        y.addmm_(h, lora_b.t(), alpha=scaling)
        ctx.save_for_backward(x2 if ctx.needs_input_grad[1] else None, xd, h, weight, lora_a, lora_b, keep)
        ctx.scaling, ctx.dropout_p, ctx.packed = scaling, dropout_p, packed
        return y

    @staticmethod
    def backward(ctx, dy2):
        x2, xd, h, weight, lora_a, lora_b, keep = ctx.saved_tensors
        s = ctx.scaling
        # [tokens, r], the gradient at the LoRA bottleneck before scaling. Computed as (B^T dy^T)^T: BLAS is
        # 2-3x slower on the skinny [tokens, out] @ [out, r] form (the same holds for dB below).
        g = torch.mm(lora_b.t(), dy2.t()).t()
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            if ctx.packed is not None:
                dx = torch.ops.mkldnn._linear_pointwise(dy2, ctx.packed[1], None, "none", [], "")
            else:
                dx = dy2 @ weight
            if keep is None:
                dx.addmm_(g, lora_a, alpha=s)
            else:
                dx.add_((g @ lora_a).mul_(keep), alpha=s / (1 - ctx.dropout_p))
        if ctx.needs_input_grad[1]:
            dw = dy2.t() @ x2
        if ctx.needs_input_grad[2]:
            db = dy2.sum(0)
        da = torch.mm(g.t(), xd).mul_(s) if ctx.needs_input_grad[3] else None
        dB = torch.mm(h.t(), dy2).mul_(s).t().contiguous() if ctx.needs_input_grad[4] else None
        return dx, dw, db, da, dB, None, None, None


def plain_lora(module, x):
    """(lora_A, lora_B, scaling, dropout p) when `module` is a plain LoRA layer in training shape for input `x`: one
    active adapter, no variant (DoRA), no LoRA bias, plain dropout, not merged, no autocast, one dtype; else None."""
    if module.disable_adapters or module.merged:
        return None
    active = module.active_adapters
    if len(active) != 1:
        return None
    name = active[0]
    lora_a = module.lora_A[name] if name in module.lora_A else None
    lora_b = module.lora_B[name] if name in module.lora_B else None
    dropout = module.lora_dropout[name] if name in module.lora_dropout else None
    if lora_a is None or name in module.lora_variant or lora_b.bias is not None \
            or not isinstance(dropout, (torch.nn.Identity, torch.nn.Dropout)) \
            or torch.is_autocast_enabled(x.device.type) \
            or not x.dtype == module.base_layer.weight.dtype == lora_a.weight.dtype == lora_b.weight.dtype:
        return None
    p = dropout.p if isinstance(dropout, torch.nn.Dropout) and dropout.training else 0.0
    return lora_a, lora_b, module.scaling[name], p


def _packable(self, x) -> bool:
    return bool(self.__dict__.get("_swiftlike_pack")) and x.device.type == "cpu" and x.dtype == torch.float32 \
        and not self.base_layer.weight.requires_grad


def _fused_forward(self, x, *args, **kwargs):
    lora = None if args or kwargs else plain_lora(self, x)
    if lora is None:
        if not args and not kwargs and self.disable_adapters and not self.merged and not torch.is_grad_enabled() \
                and _packable(self, x):
            # the preference stages' reference pass (adapter off, no grad): the base alone, on the packed weights
            base = self.base_layer
            y = torch.ops.mkldnn._linear_pointwise(x.reshape(-1, x.shape[-1]), packed_weights(self, base.weight)[0],
                                                   base.bias, "none", [], "")
            return y.view(*x.shape[:-1], y.shape[-1])
        return type(self).forward(self, x, *args, **kwargs)
    lora_a, lora_b, scaling, p = lora
    base = self.base_layer
    packed = packed_weights(self, base.weight) if _packable(self, x) else None
    y = LoraLinearFunction.apply(x.reshape(-1, x.shape[-1]), base.weight, base.bias, lora_a.weight, lora_b.weight,
                                 scaling, p, packed)
    return y.view(*x.shape[:-1], y.shape[-1])


def fuse_lora_layers(model, pack_weights: bool = False) -> int:
    """Give every plain PEFT LoRA linear layer of `model` the fused forward; returns how many. With
    `pack_weights`, frozen fp32 base weights on the CPU run through oneDNN-packed copies (see `cpu_packing`)."""
    from peft.tuners.lora.layer import Linear as LoraLinear

    count = 0
    for module in model.modules():
        if type(module) is LoraLinear and type(module.base_layer) is torch.nn.Linear \
                and not getattr(module, "fan_in_fan_out", False):
            module.forward = types.MethodType(_fused_forward, module)
            module.__dict__["_swiftlike_pack"] = bool(pack_weights) and can_pack_weights()
            count += 1
    return count


def unfuse_lora_layers(model) -> None:
    for module in model.modules():
        if isinstance(module.__dict__.get("forward"), types.MethodType) \
                and module.__dict__["forward"].__func__ is _fused_forward:
            del module.forward
            module.__dict__.pop("_swiftlike_pack", None)
            module.__dict__.pop("_swiftlike_packed", None)
