"""The training position saved in every checkpoint: what it counts, how a resume reads it."""
import logging

import pytest

from vov3d.engine.position import TrainingPosition


def _stopped(epoch=2, iterations=3, global_batch=8, world=4):
    position = TrainingPosition()
    position.start_epoch(epoch, world)
    for _ in range(iterations):
        position.advance(global_batch)
    return position


def test_a_run_resumes_in_the_epoch_it_stopped_in_only():
    position = _stopped()
    assert position.state_dict() == {"epoch": 2, "iteration": 3, "samples": 24, "world_size": 4, "meter": {}}
    assert position.resumes_in(2) and not position.resumes_in(3)
    assert position.resume(3, 4, 8, iters=10) == 0
    assert position.resume(2, 4, 8, iters=10) == 3
    position.start_epoch(3, 4)
    assert not position.resumes_in(3)  # an epoch checkpoint: the next epoch from its start


def test_another_world_size_goes_on_after_the_samples_consumed(caplog):
    position = _stopped(iterations=3, global_batch=8, world=4)  # 24 samples of the epoch's order done
    with caplog.at_level(logging.WARNING):
        assert position.resume(2, 2, 4, iters=20) == 6  # 2 processes x 2 clips: 6 iterations
    assert "this run has 2: it goes on after sample 24 of the epoch's order, as iteration 6." in caplog.text
    assert (position.iteration, position.world_size, position.samples) == (6, 2, 24)


def test_the_state_round_trips_and_a_damaged_one_is_refused():
    position = _stopped()
    position.meter = {"loss_total": 1.5, "samples": 24}
    other = TrainingPosition()
    other.load_state_dict(position.state_dict())
    assert other.state_dict() == position.state_dict()
    for key, value, message in (("iteration", -1, "'iteration' is -1"), ("samples", 2.5, "'samples' is 2.5"),
                                ("meter", [], "'meter' is list")):
        with pytest.raises(ValueError, match=message):
            TrainingPosition().load_state_dict({**position.state_dict(), key: value})
    with pytest.raises(KeyError):
        TrainingPosition().load_state_dict({"epoch": 1})
