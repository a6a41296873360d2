"""Weight initialisation shared by the model families (PySlowFast's `init_weights`).

Blocks flag their last BN with `mark_final_bn`; `init_weights` zeroes the weight of
exactly those BNs when RESNET.ZERO_INIT_FINAL_BN is set, so every residual block starts
as (the activation of) its shortcut.
"""
import torch.nn as nn

_FINAL_BN_ATTR = "transform_final_bn"


def mark_final_bn(bn: nn.Module) -> nn.Module:
    """Flag `bn` as the final BN of a residual transform (zero-initialised on request)."""
    setattr(bn, _FINAL_BN_ATTR, True)
    return bn


def is_final_bn(module: nn.Module) -> bool:
    return bool(getattr(module, _FINAL_BN_ATTR, False))


def init_weights(model: nn.Module, fc_init_std: float, zero_init_final_bn: bool) -> None:
    """Kaiming-normal (fan_out, ReLU gain) convs with zero bias; BN weight 1 (0 for flagged
    final BNs when `zero_init_final_bn`) and bias 0; Linear N(0, fc_init_std) with zero bias.

    Running statistics keep PyTorch's defaults. Works on the meta device (no data touched).
    """
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            if m.weight is not None:
                nn.init.constant_(m.weight, 0.0 if zero_init_final_bn and is_final_bn(m) else 1.0)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=fc_init_std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
