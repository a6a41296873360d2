"""Weight EMA: the closed form after n steps (buffers copied), its place in training (one update per optimiser
step, checkpoints, validation, precise BN) and in testing (MODEL.EMA.EVAL)."""
import pytest
import torch
import torch.nn as nn

from tests.conftest import metrics_records
from tests.engine.tiny_parts import (ClipDataset, TinyTestNet, fit_in_memory, make_fake_trainer_class,
                                     tiny_cfg)
from vov3d.engine.checkpointer import Checkpointer
from vov3d.engine.ema import EMA_STATE, ModelEma
from vov3d.engine.input_step import InputStep
from vov3d.engine.runtime import setup_process, unwrap_model
from vov3d.utils import checkpoint_io as cu

InMemoryTrainer = make_fake_trainer_class()


def _snapshot(model):
    return {k: v.detach().clone() for k, v in unwrap_model(model).state_dict().items()}


def _closed_form(history, decay, parameters):
    """d^n w_0 + (1 - d) * sum_i d^(n - i) w_i for the parameters, over the weights after
    steps 1..n; the buffers of the last step."""
    n = len(history) - 1
    out = {}
    for name in history[0]:
        if name in parameters:
            out[name] = decay ** n * history[0][name] + sum((1 - decay) * decay ** (n - i) * history[i][name]
                                                            for i in range(1, n + 1))
        else:
            out[name] = history[-1][name]
    return out


def _latest(out):
    return torch.load(cu.list_checkpoints(str(out))[-1], weights_only=True)


def test_the_average_after_n_steps_is_the_closed_form():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv3d(3, 4, 1), nn.BatchNorm3d(4)).double()
    ema = ModelEma(model, 0.8)
    assert not ema.module.training and not any(p.requires_grad for p in ema.module.parameters())
    history = [_snapshot(model)]
    for _ in range(6):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        model.train()(torch.randn(2, 3, 1, 2, 2, dtype=torch.float64))  # moves the BN statistics
        ema.update(model)
        history.append(_snapshot(model))
    parameters = dict(model.named_parameters())
    expected = _closed_form(history, 0.8, parameters)
    averaged = ema.module.state_dict()
    for name, value in expected.items():
        assert torch.allclose(averaged[name], value, rtol=0, atol=1e-12), name
    assert not torch.allclose(averaged["0.weight"], history[-1]["0.weight"])  # averaged
    for name in ("1.running_mean", "1.running_var", "1.num_batches_tracked"):
        assert torch.equal(averaged[name], history[-1][name]), name  # copied
    assert int(averaged["1.num_batches_tracked"]) == 6
    ema.copy_from(model)
    assert all(torch.equal(v, history[-1][k]) for k, v in ema.module.state_dict().items())


def test_training_updates_the_average_once_per_optimiser_step_and_checkpoints_it(tmp_path, monkeypatch):
    seen = []
    update = ModelEma.update

    def recording(self, model):
        seen.append(_snapshot(model))
        update(self, model)

    monkeypatch.setattr(ModelEma, "update", recording)
    cfg = tiny_cfg(tmp_path, "MODEL.EMA.ENABLE", "True", "MODEL.EMA.DECAY", "0.7", "TRAIN.BATCH_SIZE", "2",
                   "TRAIN.GRAD_ACCUMULATION_STEPS", "2", "MIXUP.ENABLE", "True")
    setup_process(cfg)
    trainer = InMemoryTrainer(cfg)
    initial = _snapshot(trainer.model)
    trainer.fit()
    assert len(seen) == 2 * 4  # 2 epochs of 8 micro-batches in steps of 2
    stored = _latest(tmp_path)
    expected = _closed_form([initial] + seen, 0.7, dict(trainer.model.named_parameters()))
    for name, value in expected.items():
        assert torch.allclose(stored[EMA_STATE][name], value, rtol=1e-5, atol=1e-6), name
    assert not torch.allclose(stored[EMA_STATE]["head.projection.weight"], stored["model_state"]["head.projection.weight"])
    assert list(stored[EMA_STATE]) == list(stored["model_state"])  # the same layout


def test_validation_scores_the_average_unless_eval_is_off(tmp_path, monkeypatch):
    evaluated = []
    forward = TinyTestNet.forward

    def recording(self, x):
        if not self.training:
            evaluated.append(self)
        return forward(self, x)

    monkeypatch.setattr(TinyTestNet, "forward", recording)
    clips, labels = ClipDataset(8, seed=1).clips, ClipDataset(8, seed=1).labels
    clips = InputStep(tiny_cfg(tmp_path), torch.device("cpu")).clips(clips)  # what the model sees
    for name, eval_ema in (("ema", "True"), ("live", "False")):
        out = tmp_path / name
        evaluated.clear()
        trainer = fit_in_memory(tiny_cfg(out, "MODEL.EMA.ENABLE", "True", "MODEL.EMA.DECAY", "0.5", "SOLVER.MAX_EPOCH", "1",
                                "MODEL.EMA.EVAL", eval_ema))
        scored = trainer.ema.module if eval_ema == "True" else trainer.model
        assert trainer.eval_model is scored and evaluated and all(m is scored for m in evaluated)
        assert trainer.model.training and not trainer.ema.module.training  # as validation left them
        with torch.no_grad():
            preds = scored.eval()(clips)
        error = 100.0 * (1 - float((preds.argmax(1) == labels).float().mean()))
        assert metrics_records(out, "val_epoch")[-1]["top1_err"] == pytest.approx(error)


def test_the_test_loads_the_average_with_eval_and_refuses_a_file_without_one(tmp_path):
    cfg = tiny_cfg(tmp_path / "ema", "MODEL.EMA.ENABLE", "True", "SOLVER.MAX_EPOCH", "1")
    fit_in_memory(cfg)
    stored = _latest(tmp_path / "ema")
    for eval_ema, entry in (("True", EMA_STATE), ("False", "model_state")):
        test_cfg = tiny_cfg(tmp_path / "ema", "MODEL.EMA.ENABLE", "True", "MODEL.EMA.EVAL", eval_ema)
        model = TinyTestNet(test_cfg)
        Checkpointer(test_cfg, model).resume_or_load("test")
        assert all(torch.equal(v, stored[entry][k]) for k, v in model.state_dict().items()), entry

    fit_in_memory(tiny_cfg(tmp_path / "plain", "SOLVER.MAX_EPOCH", "1"))
    plain_path = cu.list_checkpoints(str(tmp_path / "plain"))[-1]
    test_cfg = tiny_cfg(tmp_path / "ema", "MODEL.EMA.ENABLE", "True", "TEST.CHECKPOINT_FILE_PATH", plain_path)
    with pytest.raises(cu.CheckpointError, match=rf"'{plain_path}' \(TEST.CHECKPOINT_FILE_PATH\) holds no "
                                                 r"'ema_state'.*Set MODEL.EMA.EVAL False"):
        Checkpointer(test_cfg, TinyTestNet(test_cfg)).resume_or_load("test")


def test_the_average_starts_at_the_weights_training_starts_from(tmp_path):
    fit_in_memory(tiny_cfg(tmp_path / "plain", "SOLVER.MAX_EPOCH", "1"))
    first = cu.list_checkpoints(str(tmp_path / "plain"))[-1]
    stored = torch.load(first, weights_only=True)["model_state"]
    # Switched on for a resumed run (the checkpoint has no average) and for a fine-tune.
    resumed = tiny_cfg(tmp_path / "plain", "SOLVER.MAX_EPOCH", "2", "MODEL.EMA.ENABLE", "True")
    finetune = tiny_cfg(tmp_path / "ft", "TRAIN.CHECKPOINT_FILE_PATH", first, "MODEL.EMA.ENABLE", "True")
    for cfg in (resumed, finetune):
        setup_process(cfg)
        trainer = InMemoryTrainer(cfg)
        assert all(torch.equal(v, stored[k]) for k, v in trainer.ema.module.state_dict().items())
    log = open(tmp_path / "plain" / "stdout.log").read()
    assert "has no 'ema_state' state; it starts afresh" in log
    assert "Weight EMA: decay 0.9998 per optimiser step, starting at the weights training starts from" in log


def test_precise_bn_gives_the_average_the_statistics_of_its_own_weights(tmp_path):
    cfg = tiny_cfg(tmp_path, "BN.USE_PRECISE_STATS", "True", "MODEL.EMA.ENABLE", "True", "MODEL.EMA.DECAY", "0.5",
                   "SOLVER.MAX_EPOCH", "1")
    trainer = fit_in_memory(cfg)
    ema = trainer.ema.module
    with torch.no_grad():
        feats = ema.conv(InputStep(cfg, torch.device("cpu")).clips(ClipDataset(16).clips))
    assert torch.allclose(ema.bn.running_mean, feats.mean(dim=(0, 2, 3, 4)), atol=1e-5)
    assert not torch.allclose(ema.bn.running_mean, trainer.model.bn.running_mean, atol=1e-4)
    assert torch.equal(_latest(tmp_path)[EMA_STATE]["bn.running_mean"], ema.bn.running_mean)
    assert not ema.training
