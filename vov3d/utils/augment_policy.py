"""The RandAugment policy grammar of AUG.AA_TYPE, parsed where the config is checked and
where the datasets build the augmentation.

`rand-m9-n2-mstd0.5-inc1-w0`: after `rand`, dash-separated tokens in any order: `m` the
magnitude (integer, 0..10 used; default 10), `n` operations per clip (default 2), `mstd`
the standard deviation of Gaussian noise on the magnitude per operation (default 0),
`inc` 1 for the operation variants whose severity grows with the magnitude (default 0),
`w` the index of the operation-choice weights (only 0; without it the choice is uniform).
"""
import re
from dataclasses import dataclass
from typing import Optional

MAX_MAGNITUDE = 10.0
_TOKEN = re.compile(r"(mstd|inc|m|n|w)(\d+(?:\.\d*)?)")


class PolicyError(ValueError):
    """An AA_TYPE string that does not parse; the message names the bad token."""


@dataclass(frozen=True)
class RandAugmentPolicy:
    magnitude: float = MAX_MAGNITUDE
    num_layers: int = 2
    magnitude_std: float = 0.0
    increasing: bool = False
    weight_index: Optional[int] = None

    @classmethod
    def parse(cls, text: str) -> "RandAugmentPolicy":
        parts = text.split("-")
        if parts[0] != "rand":
            raise PolicyError(f"token {parts[0]!r} of {text!r}: the policy must start with 'rand' (only "
                              "RandAugment policies exist)")
        values = {}
        for token in parts[1:]:
            match = _TOKEN.fullmatch(token)
            if match is None:
                raise PolicyError(f"token {token!r} of {text!r} is not one of m<int>, n<int>, mstd<float>, "
                                  "inc<0|1>, w<int>")
            values[match.group(1)] = (token, match.group(2))
        try:
            number = {key: (int if key != "mstd" else float)(value) for key, (_, value) in values.items()}
        except ValueError:
            bad = next(token for key, (token, value) in values.items() if key != "mstd" and not value.isdigit())
            raise PolicyError(f"token {bad!r} of {text!r}: an integer value is expected") from None
        policy = cls(magnitude=float(number.get("m", MAX_MAGNITUDE)), num_layers=number.get("n", 2),
                     magnitude_std=number.get("mstd", 0.0), increasing=bool(number.get("inc", 0)),
                     weight_index=number.get("w"))
        if policy.num_layers < 1:
            raise PolicyError(f"token 'n{policy.num_layers}' of {text!r}: at least one operation per clip")
        if number.get("inc", 0) not in (0, 1):
            raise PolicyError(f"token {values['inc'][0]!r} of {text!r}: inc is 0 or 1")
        if policy.weight_index not in (None, 0):
            raise PolicyError(f"token {values['w'][0]!r} of {text!r}: only the weights w0 exist")
        return policy
