"""Frozen batch norm for fine-tuning (MODEL.FROZEN_BN, BN.FROZEN_AFFINE), for every model."""
import types

import torch.nn as nn


def _stay_in_eval(module: nn.Module, mode: bool = True) -> nn.Module:
    return nn.Module.train(module, False)


def freeze_batchnorm(model: nn.Module, affine: bool = False) -> nn.Module:
    """Keep every BN layer in eval mode (running statistics used, never updated) through all
    later `model.train()` calls; with `affine`, also stop gradients to its weight and bias
    (mmaction2's "bnfrozen"). Parameters and state dict are unchanged."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.train = types.MethodType(_stay_in_eval, m)
            m.eval()
            if affine and m.affine:
                m.weight.requires_grad_(False)
                m.bias.requires_grad_(False)
    return model
