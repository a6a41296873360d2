"""Model complexity: parameters, FLOPs and activations of one clip.

Convention (PySlowFast / fvcore, and every published X3D/VoV3D figure): batch 1, eval
mode, one fused multiply-add = one FLOP. "conv+linear" counts only convolutions and
linear layers; fvcore's default count adds its batch-norm (and a few other) handles.

`conv_linear_flops` is exact and analytic: forward hooks read the layer shapes while
the model runs on the meta device, so it costs nothing even at the full test crop.
The fvcore figures trace a real forward pass.
"""
import copy
from typing import Dict, Sequence

import torch
import torch.nn as nn

# fvcore operator names of convolutions and linear layers (2-D linear inputs trace as addmm).
_CONV_LINEAR_OPS = ("conv", "linear", "addmm")


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _on_meta(model: nn.Module) -> nn.Module:
    """The model itself if it already lives on the meta device, else a meta copy."""
    if all(p.is_meta for p in model.parameters()):
        return model
    return copy.deepcopy(model).to("meta")


def conv_linear_flops(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Exact multiply-adds of every Conv and Linear layer for an input of `input_shape`."""
    meta = _on_meta(model)
    was_training = meta.training
    total = [0]

    def conv_hook(m, inputs, output):
        kernel = 1
        for k in m.kernel_size:
            kernel *= k
        total[0] += output.numel() * (m.in_channels // m.groups) * kernel

    def linear_hook(m, inputs, output):
        total[0] += output.numel() * m.in_features

    handles = []
    for m in meta.modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    meta.eval()
    try:
        with torch.no_grad():
            meta(torch.empty(*input_shape, device="meta"))
    finally:
        for h in handles:
            h.remove()
        meta.train(was_training)
    return total[0]


def conv_linear_gflops(model: nn.Module, input_shape: Sequence[int]) -> float:
    return conv_linear_flops(model, input_shape) / 1e9


def fvcore_counts(model: nn.Module, input_shape: Sequence[int]) -> Dict[str, float]:
    """fvcore on a real forward pass (eval, random input): GFLOPs with its default handles,
    the conv+linear part of them, and the activation count (millions)."""
    from fvcore.nn import ActivationCountAnalysis, FlopCountAnalysis

    device = next(model.parameters()).device
    x = torch.randn(*input_shape, device=device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            flops = FlopCountAnalysis(model, (x,))
            flops.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            by_op = flops.by_operator()
            acts = ActivationCountAnalysis(model, (x,))
            acts.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            activations = acts.total()
    finally:
        model.train(was_training)
    return {
        "fvcore_gflops": sum(by_op.values()) / 1e9,
        "fvcore_conv_linear_gflops": sum(by_op.get(op, 0) for op in _CONV_LINEAR_OPS) / 1e9,
        "activations_m": activations / 1e6,
    }


def clip_shapes(cfg) -> Dict[str, tuple]:
    """Batch-1 input shapes at the train and test crops of a config."""
    c, t = cfg.DATA.INPUT_CHANNEL_NUM[0], cfg.DATA.NUM_FRAMES
    return {"train": (1, c, t, cfg.DATA.TRAIN_CROP_SIZE, cfg.DATA.TRAIN_CROP_SIZE),
            "test": (1, c, t, cfg.DATA.TEST_CROP_SIZE, cfg.DATA.TEST_CROP_SIZE)}


def complexity_summary(model: nn.Module, cfg, with_fvcore: bool = True) -> Dict[str, object]:
    """Parameters and per-crop counts, as a flat dict (`format_complexity` prints it)."""
    summary: Dict[str, object] = {"params": count_params(model)}
    for crop, shape in clip_shapes(cfg).items():
        summary[f"{crop}_input"] = list(shape)
        summary[f"{crop}_gflops_conv_linear"] = conv_linear_gflops(model, shape)
        if with_fvcore:
            for key, value in fvcore_counts(model, shape).items():
                summary[f"{crop}_{key}"] = value
            # fvcore counts activations as output elements; float32 = 4 bytes each.
            summary[f"{crop}_activation_mb"] = summary[f"{crop}_activations_m"] * 4.0
    return summary


def format_complexity(summary: Dict[str, object]) -> str:
    lines = [f"params: {summary['params']:,} ({summary['params'] / 1e6:.3f} M)"]
    for crop in ("train", "test"):
        shape = "x".join(str(s) for s in summary[f"{crop}_input"])
        line = f"{crop} crop {shape}: conv+linear {summary[f'{crop}_gflops_conv_linear']:.6f} GFLOPs"
        if f"{crop}_fvcore_gflops" in summary:
            line += (f", fvcore default {summary[f'{crop}_fvcore_gflops']:.6f} GFLOPs"
                     f", activations {summary[f'{crop}_activations_m']:.3f} M"
                     f" (conv/linear outputs, {summary[f'{crop}_activation_mb']:.1f} MB float32)")
        lines.append(line)
    return "\n".join(lines)
