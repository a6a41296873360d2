"""tools/run_net.py with the toy test model (tests/tools/toy_model.py) registered, for runs in
other processes (torchrun workers, emulated machines):

    python tests/tools/run_net_toy.py [--iteration-sleep S] <run_net arguments>

`--iteration-sleep S` makes every training iteration S seconds longer, so that a signal sent
by a test lands in the middle of an epoch.
"""
import os
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO_ROOT)

from tests.conftest import import_tool  # noqa: E402
from tests.tools.toy_model import ResumeDropoutNet, toy_model_registered  # noqa: E402


def _slow_training(seconds: float) -> None:
    forward = ResumeDropoutNet.forward

    def slow(model, x):
        if model.training:
            time.sleep(seconds)
        return forward(model, x)

    ResumeDropoutNet.forward = slow


def main(argv):
    if argv[:1] == ["--iteration-sleep"]:
        _slow_training(float(argv[1]))
        argv = argv[2:]
    run_net = import_tool("run_net", "run_net")
    with toy_model_registered():
        return run_net.main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
