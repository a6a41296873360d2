"""Heads in their networks: training returns raw logits after dropout on the lin_5 features
(BN on batch statistics, momentum 0.1); eval applies HEAD_ACT at every temporal and spatial
position and averages; the pooling window is ceil(TRAIN_CROP_SIZE / 32) so a training clip
pools to one position."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from tests.models import reference_functional as ref
from tests.models.model_helpers import small_cfg
from vov3d.config import ConfigError
from vov3d.models import build_model
from vov3d.models.heads import make_head_activation

X3D_M = "configs/Kinetics/x3d/X3D_M_256e.yaml"
VOV3D_M = "configs/Kinetics/vov3d/vov3d_M.yaml"
FAMILIES = [(X3D_M, ref.x3d_block), (VOV3D_M, ref.vov3d_block)]
FAMILY_IDS = ["x3d", "vov3d"]


def _training_bn(buffers, momentum=0.1, eps=1e-5):
    """Functional train-mode BN: batch statistics, running stats updated in `buffers`."""

    def bn(x, sd, p):
        return F.batch_norm(x, buffers[p + ".running_mean"], buffers[p + ".running_var"],
                            sd[p + ".weight"], sd[p + ".bias"], True, momentum, eps)

    return bn


def _training_head(x, sd, pool, bn, seed, dropout_rate):
    x = F.relu(bn(F.conv3d(x, sd["head.conv_5.weight"]), sd, "head.conv_5_bn"))
    x = F.relu(F.conv3d(F.avg_pool3d(x, pool, stride=1), sd["head.lin_5.weight"]))
    x = x.permute(0, 2, 3, 4, 1)
    torch.manual_seed(seed)
    x = F.dropout(x, dropout_rate, training=True)
    x = F.linear(x, sd["head.projection.weight"], sd["head.projection.bias"])
    return x.reshape(x.shape[0], -1)


@pytest.mark.parametrize("relpath,block_fn", FAMILIES, ids=FAMILY_IDS)
def test_training_step_matches_reference_bn_momentum_and_dropout(relpath, block_fn, monkeypatch):
    torch.manual_seed(0)
    model = ref.randomize_(build_model(small_cfg(relpath)).double()).train()
    assert model.head.dropout.p == 0.5
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    buffers = {k: v.clone() for k, v in sd.items() if k.endswith(("running_mean", "running_var"))}
    x = torch.randn(3, 3, 4, 32, 32, dtype=torch.float64)

    torch.manual_seed(11)  # the only random op of the forward is the head's dropout
    out = model([x])

    bn = _training_bn(buffers)
    monkeypatch.setattr(ref, "bn", bn)
    h = ref.stem(x, sd)
    for s in range(2, 6):
        i = 0
        while f"s{s}.pathway0_res{i}.branch2.c.weight" in sd:
            h = block_fn(h, sd, f"s{s}.pathway0_res{i}", 2 if i == 0 else 1)
            i += 1
    expected = _training_head(h, sd, [4, 1, 1], bn, 11, 0.5)

    assert out.shape == (3, 400)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-10)
    state = model.state_dict()
    for key, value in buffers.items():
        torch.testing.assert_close(state[key], value, rtol=0, atol=1e-12, msg=key)
        tracked = key.rsplit(".", 1)[0] + ".num_batches_tracked"
        assert state[tracked].item() == 1, tracked


@pytest.mark.parametrize("relpath,block_fn", FAMILIES, ids=FAMILY_IDS)
def test_eval_averages_softmax_over_temporal_and_spatial_positions(relpath, block_fn):
    torch.manual_seed(0)
    model = ref.randomize_(build_model(small_cfg(relpath)).double()).eval()
    # 6 frames of 64 x 96 px against a 4 x 32 x 32 training clip: 3 x 2 x 3 head positions.
    x = torch.randn(2, 3, 6, 64, 96, dtype=torch.float64)
    logits = []
    hook = model.head.projection.register_forward_hook(lambda m, i, o: logits.append(o))
    with torch.no_grad():
        out = model(x)
    hook.remove()
    assert logits[0].shape == (2, 3, 2, 3, 400)
    torch.testing.assert_close(out, torch.softmax(logits[0], dim=-1).mean(dim=(1, 2, 3)),
                               rtol=0, atol=1e-14)
    torch.testing.assert_close(out, ref.network(x, model.state_dict(), block_fn, [4, 1, 1]),
                               rtol=0, atol=1e-12)


def test_eval_sigmoid_head_and_no_dropout_module_at_rate_zero():
    torch.manual_seed(0)
    cfg = small_cfg(X3D_M, 4, 32, 64, "MODEL.HEAD_ACT", "sigmoid", "MODEL.DROPOUT_RATE", "0.0")
    model = ref.randomize_(build_model(cfg).double())
    assert not hasattr(model.head, "dropout")
    assert not any(isinstance(m, nn.Dropout) for m in model.modules())
    x = torch.randn(1, 3, 4, 64, 64, dtype=torch.float64)
    logits = []
    hook = model.head.projection.register_forward_hook(lambda m, i, o: logits.append(o))
    with torch.no_grad():
        probs = model.eval()(x)
        raw = model.train()(x)  # BN now uses batch statistics: only check the head contract
    hook.remove()
    torch.testing.assert_close(probs, torch.sigmoid(logits[0]).mean(dim=(1, 2, 3)), rtol=0, atol=1e-14)
    torch.testing.assert_close(raw, logits[1].mean(dim=(1, 2, 3)), rtol=0, atol=0)


@pytest.mark.parametrize("relpath,block_fn", FAMILIES, ids=FAMILY_IDS)
def test_head_window_rounds_up_so_training_clips_pool_to_one_position(relpath, block_fn):
    # 48 px: the final map is ceil(48 / 32) = 2 wide, and so is the window (floor would be 1).
    torch.manual_seed(0)
    model = ref.randomize_(build_model(small_cfg(relpath, 4, 48, 64)).double()).train()
    assert list(model.head.avg_pool.kernel_size) == [4, 2, 2]
    for m in model.modules():  # running statistics, so train and eval differ only in the head
        if isinstance(m, nn.BatchNorm3d):
            m.eval()
    model.head.dropout.p = 0.0
    x = torch.randn(2, 3, 4, 48, 48, dtype=torch.float64)
    out = model(x)
    torch.testing.assert_close(out, ref.network(x, model.state_dict(), block_fn, [4, 2, 2], training=True),
                               rtol=0, atol=1e-12)


def test_unknown_head_activation_is_a_config_error():
    assert isinstance(make_head_activation("softmax"), nn.Softmax)
    assert isinstance(make_head_activation("sigmoid"), nn.Sigmoid)
    with pytest.raises(ConfigError, match=r"MODEL\.HEAD_ACT is 'relu'; expected one of \['softmax', 'sigmoid'\]"):
        make_head_activation("relu")
