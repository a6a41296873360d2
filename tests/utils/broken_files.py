"""Ways a checkpoint file gets damaged on disk, for the tests that read one back."""
import os
import random


def truncate(path):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def empty(path):
    open(path, "wb").close()


def random_bytes(path):
    with open(path, "wb") as f:
        f.write(random.Random(0).randbytes(3000))


def flip_tensor_bytes(path):
    # The zip index stays intact (torch.load succeeds on such a file); only a CRC check sees it.
    data = bytearray(open(path, "rb").read())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(b ^ 0xFF for b in data[middle:middle + 64])
    open(path, "wb").write(bytes(data))
