"""Batch-norm variants applied to built models: frozen BN for fine-tuning (MODEL.FROZEN_BN,
BN.FROZEN_AFFINE) and sub-batch BN for multigrid training (MULTIGRID.BN_BASE_SIZE)."""
import types

import torch
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


class SubBatchNorm3d(nn.BatchNorm3d):
    """BatchNorm3d whose training statistics come from sub-batches of `base_size` clips
    (multigrid's BN_BASE_SIZE): a batch of n = k x base_size clips is normalised in k groups,
    clips i, i + k, i + 2k, ... forming group i, as PySlowFast's sub-batch BN splits them.
    A batch that is not such a multiple uses the largest group count dividing it.

    The running statistics are those of the whole batch (the mean of the group means; the
    mean group variance plus the variance of the group means), updated with the layer's
    momentum, so the buffers, parameters and state dict are a BatchNorm3d's and evaluation
    is plain BN.
    """

    base_size: int = 8

    def forward(self, x):
        n = x.shape[0]
        groups = max((k for k in range(1, n // self.base_size + 1) if n % k == 0), default=1)
        if not self.training or groups == 1:
            return super().forward(x)
        c = x.shape[1]
        # Statistics in float32 whatever autocast gives the layer, as nn.BatchNorm's kernels do.
        grouped = x.reshape(n // groups, c * groups, *x.shape[2:]).float()
        dims = [0] + list(range(2, x.dim()))
        var, mean = torch.var_mean(grouped, dim=dims, unbiased=False)
        y = (grouped - _expand(mean, x.dim())) * _expand(torch.rsqrt(var + self.eps), x.dim())
        y = y.reshape(x.shape)
        if self.affine:
            y = y * _expand(self.weight, x.dim()) + _expand(self.bias, x.dim())
        if self.track_running_stats:
            self._update_running(mean.detach().view(groups, c), var.detach().view(groups, c),
                                 grouped.numel() // grouped.shape[1])
        return y.to(x.dtype)

    @torch.no_grad()
    def _update_running(self, means, variances, count: int) -> None:
        self.num_batches_tracked += 1
        momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
        mean = means.mean(0)
        var = variances.mean(0) * count / max(count - 1, 1) + means.var(0, unbiased=False)
        self.running_mean.mul_(1 - momentum).add_(mean, alpha=momentum)
        self.running_var.mul_(1 - momentum).add_(var, alpha=momentum)


def _expand(v, dims: int):
    return v.view(1, -1, *([1] * (dims - 2)))


def use_sub_batch_norm(model: nn.Module, base_size: int) -> nn.Module:
    """Turn every (unfrozen) BatchNorm3d of `model` into a SubBatchNorm3d of `base_size`
    clips per group, in place: parameters, buffers and the optimiser's references stay."""
    for module in model.modules():
        if type(module) is nn.BatchNorm3d:
            module.__class__ = SubBatchNorm3d
            module.base_size = base_size
    return model
