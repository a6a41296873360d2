"""User errors are recognised by class and reported as `Name: message`, also after a
DataLoader worker re-raised them."""
import torch

from vov3d.datasets.failures import DataLoadError
from vov3d.utils.checkpoint_io import CheckpointError
from vov3d.utils.errors import UserError, describe, original_message


class _Fails(torch.utils.data.Dataset):
    def __init__(self, error):
        self.error = error

    def __len__(self):
        return 1

    def __getitem__(self, index):
        try:
            raise CheckpointError("an earlier error: unrelated")
        except CheckpointError:
            raise self.error  # chained: the worker's traceback quotes both


def _from_worker(error):
    try:
        next(iter(torch.utils.data.DataLoader(_Fails(error), num_workers=1)))
    except BaseException as e:
        return e
    raise AssertionError("the worker did not fail")


def test_plain_errors_keep_their_message():
    assert describe(CheckpointError("cannot resume: OUTPUT_DIR holds another model")) == (
        "CheckpointError: cannot resume: OUTPUT_DIR holds another model")
    assert original_message(ValueError("Caught nothing")) == "Caught nothing"
    assert isinstance(DataLoadError("x"), UserError) and not isinstance(ValueError("x"), UserError)


def test_worker_errors_are_reduced_to_the_message_of_their_own_class():
    error = _from_worker(DataLoadError("no clip of /data/a.mp4 could be read;\ncheck DATA.PATH_PREFIX"))
    assert type(error) is DataLoadError and "Original Traceback" in str(error)
    assert original_message(error) == "no clip of /data/a.mp4 could be read;\ncheck DATA.PATH_PREFIX"
    assert describe(error).startswith("DataLoadError: no clip of /data/a.mp4")
    # The earlier CheckpointError in the quoted traceback is not taken for the message.
    error = _from_worker(CheckpointError("the final one"))
    assert original_message(error) == "the final one"
    # A built-in class is quoted without its module.
    assert original_message(_from_worker(ValueError("bad value"))) == "bad value"


def test_a_tool_reports_settings_with_2_and_files_with_1(capsys):
    from vov3d.config import ConfigError
    from vov3d.utils.errors import report_user_error

    class MissingWeights(UserError):
        pass

    assert report_user_error("tool.py", ConfigError("TRAIN.BATCH_SIZE 0 must be > 0")) == 2
    assert report_user_error("tool.py", MissingWeights("no weights")) == 1
    assert report_user_error("tool.py", MissingWeights("no weights"), settings=(MissingWeights,)) == 2
    assert capsys.readouterr().err.splitlines() == ["tool.py: config error: TRAIN.BATCH_SIZE 0 must be > 0",
                                                    "tool.py: MissingWeights: no weights",
                                                    "tool.py: config error: no weights"]
