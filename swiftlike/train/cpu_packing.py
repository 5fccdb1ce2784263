"""oneDNN-packed copies of frozen fp32 CPU weights, for training on the CPU.

At training shapes (a few hundred tokens per step) oneDNN's fp32 kernels on blocked ("packed") weights beat the
default BLAS call by 15-25 %, and by ~40 % on a large output head. A frozen weight is packed twice: W for the
forward and W^T for the input gradient. When the original weight is mapped from the checkpoint file (safetensors
loads lazily through mmap), its pages are handed back to the kernel after packing: they are clean file pages,
re-read from disk if anything touches the weight again, so the packed copies cost little extra memory.
"""
from __future__ import annotations

import ctypes
import functools
import mmap
import sys

import torch

_MADV_PAGEOUT = 21  # Linux >= 5.4: reclaim these pages now (a hint; contents are never lost)


def can_pack_weights() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")


def packed(module, weight):
    """(W, W^T) packed for oneDNN, made once per module and remade if the weight changes (a cache keyed on the
    weight's storage and version, so loading new weights into the model never runs on stale copies)."""
    key = (weight.data_ptr(), weight._version)
    cached = module.__dict__.get("_swiftlike_packed")
    if cached is None or cached[0] != key:
        module.__dict__.pop("_swiftlike_packed", None)  # free the stale copies before making new ones
        pack = torch.ops.mkldnn._reorder_linear_weight
        w = weight.detach()
        cached = (key, (pack(w, None), pack(w.t().contiguous(), None)))
        module.__dict__["_swiftlike_packed"] = cached
        release_file_pages(w)
    return cached[1]


def _file_mapped(address: int) -> bool:
    """True when `address` lies in a mapping of a regular file (not the heap, an anonymous map or a device)."""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                fields = line.split(maxsplit=5)
                lo, hi = (int(x, 16) for x in fields[0].split("-"))
                if lo <= address < hi:
                    return len(fields) == 6 and fields[5].startswith("/") and fields[4] != "0"
    except OSError:
        pass
    return False


def release_file_pages(tensor) -> bool:
    """Ask the kernel to drop the resident pages of a tensor that is mapped from a file (clean pages of the
    checkpoint: dropping them loses nothing, a later read faults them back in). Anonymous memory is left alone,
    so nothing is ever pushed to swap. Returns whether pages were released."""
    if not sys.platform.startswith("linux") or tensor.device.type != "cpu" or tensor.numel() == 0:
        return False
    start = tensor.data_ptr()
    if not _file_mapped(start):
        return False
    page = mmap.PAGESIZE
    lo = -(-start // page) * page  # only whole pages inside the tensor
    hi = (start + tensor.numel() * tensor.element_size()) // page * page
    if hi <= lo:
        return False
    return _madvise()(lo, hi - lo, _MADV_PAGEOUT) == 0


@functools.lru_cache(maxsize=1)
def _madvise():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return libc.madvise


class PackedLinearFunction(torch.autograd.Function):
    """y = x W^T + b for a frozen W through its packed copies; only the input gets a gradient."""

    @staticmethod
    def forward(ctx, x2, weight, bias, w_packed, wt_packed):
        # 2-D in and out (the caller reshapes): see LoraLinearFunction
        ctx.wt_packed = wt_packed
        return torch.ops.mkldnn._linear_pointwise(x2, w_packed, bias, "none", [], "")

    @staticmethod
    def backward(ctx, dy):
        dx = torch.ops.mkldnn._linear_pointwise(dy, ctx.wt_packed, None, "none", [], "")
        return dx, None, None, None, None


def _packed_linear_forward(self, x):
    w = self.weight
    if (x.device.type == "cpu" and x.dtype == w.dtype == torch.float32 and not w.requires_grad
            and (self.bias is None or not self.bias.requires_grad) and not torch.is_autocast_enabled("cpu")):
        w_packed, wt_packed = packed(self, w)
        y = PackedLinearFunction.apply(x.reshape(-1, x.shape[-1]), w, self.bias, w_packed, wt_packed)
        return y.view(*x.shape[:-1], y.shape[-1])
    return type(self).forward(self, x)


def pack_output_head(model) -> bool:
    """Run a frozen nn.Linear output head (the lm_head, often tied to the embeddings) through packed weights.
    The head is the largest single matmul of a small model's step; returns whether it was set up."""
    import types

    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if type(head) is not torch.nn.Linear or not can_pack_weights():
        return False
    head.forward = types.MethodType(_packed_linear_forward, head)
    return True


def unpack_output_head(model) -> None:
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None and "forward" in head.__dict__:
        del head.forward
        head.__dict__.pop("_swiftlike_packed", None)
