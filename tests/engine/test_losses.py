import pytest
import torch
import torch.nn.functional as F

from vov3d.engine.losses import get_loss_func


def test_losses_agree_on_hard_labels_and_accept_soft_targets():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.1, 0.2, 3.0]])
    labels = torch.tensor([0, 1])
    ce = get_loss_func("cross_entropy")(logits, labels)
    assert torch.allclose(get_loss_func("soft_cross_entropy")(logits, labels), ce)
    soft = torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    expected = -(soft * logits.log_softmax(1)).sum(1).mean()
    assert torch.allclose(get_loss_func("soft_cross_entropy")(logits, soft), expected)
    onehot = F.one_hot(labels, 3).float()
    assert torch.allclose(get_loss_func("bce_logit")(logits, labels),
                          F.binary_cross_entropy_with_logits(logits, onehot))
    assert torch.allclose(get_loss_func("bce")(logits.sigmoid(), labels),
                          F.binary_cross_entropy(logits.sigmoid(), onehot))
    with pytest.raises(NotImplementedError, match="MODEL.LOSS_FUNC"):
        get_loss_func("focal")


def test_cross_entropy_takes_class_distributions_like_soft_cross_entropy():
    logits = torch.randn(4, 5, generator=torch.Generator().manual_seed(0)).double()
    targets = torch.softmax(torch.randn(4, 5, generator=torch.Generator().manual_seed(1)), 1)  # float32
    expected = -(targets.double() * logits.log_softmax(1)).sum(1).mean()
    for name in ("cross_entropy", "soft_cross_entropy"):
        loss = get_loss_func(name)(logits, targets)
        assert loss.dtype == torch.float64 and torch.allclose(loss, expected, rtol=0, atol=1e-12), name
