"""Hand-written torch.nn.functional versions of the X3D / VoV3D computations, driven by
state-dict keys only, used as an independent reference for the module implementations.

The layer order of the reference implementations:
  X3D block   = ReLU(shortcut + c_bn(c(Swish(SE?(b_bn(b(ReLU(a_bn(a(x))))))))))
  D(2+1)D     = ReLU([x] + BN(c(Swish(SE?(BN(dwT(dwS(ReLU(BN(a(x)))))))))))
  VoV3D block = ReLU(shortcut + c_bn(c(concat([x if stride 1] + unit outputs))))
  head        = projection(ReLU(lin_5(avgpool(ReLU(conv_5_bn(conv_5(x))))))), eval:
                softmax per position, then the mean.
"""
import torch
import torch.nn.functional as F

EPS = 1e-5


def randomize_(model, seed=0):
    """Fill every parameter and BN buffer with deterministic random values (BN variances
    positive, no zero weights), so zero-init cannot hide a wrong computation."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.dtype == torch.int64:
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g, dtype=torch.float64) + 0.5)
            elif name.endswith("running_mean") or name.endswith("bias"):
                t.copy_(torch.randn(t.shape, generator=g, dtype=torch.float64) * 0.1)
            elif t.dim() == 1:  # BN weight
                t.copy_(torch.rand(t.shape, generator=g, dtype=torch.float64) + 0.5)
            else:
                fan_in = t[0].numel()
                t.copy_(torch.randn(t.shape, generator=g, dtype=torch.float64) / fan_in ** 0.5)
    return model


def bn(x, sd, p):
    return F.batch_norm(x, sd[p + ".running_mean"], sd[p + ".running_var"], sd[p + ".weight"],
                        sd[p + ".bias"], False, 0.0, EPS)


def se(x, sd, p):
    if p + ".fc1.weight" not in sd:
        return x
    s = x.mean(dim=(2, 3, 4), keepdim=True)
    s = F.relu(F.conv3d(s, sd[p + ".fc1.weight"], sd[p + ".fc1.bias"]))
    s = torch.sigmoid(F.conv3d(s, sd[p + ".fc2.weight"], sd[p + ".fc2.bias"]))
    return x * s


def swish(x):
    return x * torch.sigmoid(x)


def stem(x, sd, p="s1.pathway0_stem"):
    w = sd[p + ".conv.weight"]
    x = F.conv3d(x, sd[p + ".conv_xy.weight"], stride=(1, 2, 2), padding=(0, 1, 1))
    x = F.conv3d(x, w, padding=(w.shape[2] // 2, 0, 0), groups=w.shape[0])
    return F.relu(bn(x, sd, p + ".bn"))


def shortcut(x, sd, p, stride):
    if p + ".branch1.weight" in sd:
        return bn(F.conv3d(x, sd[p + ".branch1.weight"], stride=(1, stride, stride)), sd, p + ".branch1_bn")
    return x


def x3d_block(x, sd, p, stride):
    q = p + ".branch2"
    h = F.relu(bn(F.conv3d(x, sd[q + ".a.weight"]), sd, q + ".a_bn"))
    w = sd[q + ".b.weight"]
    h = bn(F.conv3d(h, w, stride=(1, stride, stride), padding=1, groups=w.shape[0]), sd, q + ".b_bn")
    h = swish(se(h, sd, q + ".se"))
    h = bn(F.conv3d(h, sd[q + ".c.weight"]), sd, q + ".c_bn")
    return F.relu(shortcut(x, sd, p, stride) + h)


def d2plus1d_unit(x, sd, p, stride):
    h = F.relu(bn(F.conv3d(x, sd[p + ".a.0.weight"]), sd, p + ".a.1"))
    w1, w2 = sd[p + ".b1.weight"], sd[p + ".b2.weight"]
    h = F.conv3d(h, w1, stride=(1, stride, stride), padding=(0, 1, 1), groups=w1.shape[0])
    h = F.conv3d(h, w2, padding=(1, 0, 0), groups=w2.shape[0])
    h = swish(se(bn(h, sd, p + ".b_bn"), sd, p + ".se"))
    h = bn(F.conv3d(h, sd[p + ".c.0.weight"]), sd, p + ".c.1")
    if stride == 1 and h.shape[1] == x.shape[1]:
        h = x + h
    return F.relu(h)


def vov3d_block(x, sd, p, stride):
    q = p + ".branch2"
    outs = [x] if stride == 1 else []
    h = x
    j = 0
    while f"{q}.layers.{j}.a.0.weight" in sd:
        h = d2plus1d_unit(h, sd, f"{q}.layers.{j}", stride if j == 0 else 1)
        outs.append(h)
        j += 1
    agg = bn(F.conv3d(torch.cat(outs, 1), sd[q + ".c.weight"]), sd, q + ".c_bn")
    return F.relu(shortcut(x, sd, p, stride) + agg)


def head(x, sd, pool, training):
    x = F.relu(bn(F.conv3d(x, sd["head.conv_5.weight"]), sd, "head.conv_5_bn"))
    x = F.avg_pool3d(x, pool, stride=1)
    x = F.relu(F.conv3d(x, sd["head.lin_5.weight"]))
    x = x.permute(0, 2, 3, 4, 1)
    x = F.linear(x, sd["head.projection.weight"], sd["head.projection.bias"])
    if not training:
        x = torch.softmax(x, dim=-1)
    return x.mean(dim=(1, 2, 3))


def network(x, sd, block_fn, pool, training=False):
    """Whole X3D / VoV3D forward from a state dict (block 0 of each stage has stride 2)."""
    x = stem(x, sd)
    for s in range(2, 6):
        i = 0
        while any(k.startswith(f"s{s}.pathway0_res{i}.") for k in sd):
            x = block_fn(x, sd, f"s{s}.pathway0_res{i}", 2 if i == 0 else 1)
            i += 1
    return head(x, sd, pool, training)
