"""Naming the rank a collective lost: one that died (its connection broke) or one that stopped
answering (SIGSTOP, a hang, a machine cut off from the network).

When the job is joined, every rank learns every other rank's host, addresses and pid, and
where the job's store listens. A collective that fails because a peer's connection broke
names the peer from the address gloo reports. A collective that times out after
DIST_TIMEOUT names no peer, so the ranks that timed out hold a roll call at the store:
whoever does not answer within ROLL_CALL_S is the one that stopped answering (the rank
whose process serves the store, when the store itself does not answer).
"""
import datetime
import os
import re
import threading
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch.distributed as dist

from vov3d.utils import comm
from vov3d.utils.errors import UserError

# Seconds the ranks that timed out wait for each other at the roll call.
ROLL_CALL_S = 10.0

# Host, addresses and pid of every rank, in rank order, learned when joining.
_PEERS: List[Dict[str, Any]] = []
# (host, port) of the job's store, its owner (a rank, or None for torchrun's agent), the
# collective timeout in seconds, and which join of this process it is.
_STORE: Dict[str, Any] = {}


class RankLostError(UserError, RuntimeError):
    """Another process of the job stopped mid-run (killed, out of memory, its machine lost)
    or stopped answering. Not the user's doing, but reported the same way: one line saying
    what to do."""


def record_peers(peers: List[Dict[str, Any]], store: Optional[Tuple[str, int]], store_rank: Optional[int],
                 timeout_s: float) -> None:
    """Remember the job just joined: `peers` in rank order and its store's address."""
    _PEERS[:] = peers
    joins = _STORE.get("joins", 0) + 1
    _STORE.clear()
    _STORE.update(address=store, owner=store_rank, timeout_s=timeout_s, joins=joins)


def forget_peers() -> None:
    _PEERS.clear()


def short_list(values: Sequence[int], limit: int = 8) -> str:
    shown = ", ".join(map(str, values[:limit]))
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")


# gloo's words when a peer's connection breaks; it names the peer's address as [ip]:port.
_LOST_PEER = ("Connection reset by peer", "Connection closed by peer", "Broken pipe")
_PEER_ADDRESS = re.compile(r"\[([0-9A-Fa-f.:]+)\]:(\d+)")
# gloo's words when a peer does not send or receive in time.
_TIMED_OUT = re.compile(r"Timed out waiting \d+ms for (?:recv|send) operation")


def lost_rank_error(error: BaseException, advice: str) -> Optional[RankLostError]:
    """A RankLostError naming the rank this one lost, when `error` is a collective that
    failed because a peer went away or stopped answering; None for anything else."""
    if not _PEERS or not isinstance(error, RuntimeError):
        return None
    text = str(error)
    if _TIMED_OUT.search(text):
        return _silent_rank_error(advice)
    phrase = next((p for p in _LOST_PEER if p in text), None)
    if phrase is None:
        return None
    match = _PEER_ADDRESS.search(text)
    where = f"{match.group(0)}: {phrase}" if match else phrase
    return RankLostError(f"{_who_was_at(match.group(1) if match else None)} stopped in the middle of the run; "
                         f"rank {comm.get_rank()} lost its connection to it ({where}). {advice}")


def _silent_rank_error(advice: str) -> Optional[RankLostError]:
    missing = roll_call()
    if missing == []:
        return None  # everyone answers: not a lost rank (e.g. ranks in different collectives)
    host, port = _STORE["address"] or ("?", 0)
    timeout = f"DIST_TIMEOUT {_STORE['timeout_s']:.0f} s"
    if missing is None:
        owner = _STORE["owner"]
        who = _describe([owner]) if owner is not None else "the torchrun agent of the first machine"
        return RankLostError(f"{who}, which serves the job's store at {host}:{port}, stopped answering: rank "
                             f"{comm.get_rank()} waited {timeout} in a collective, and the store did not answer "
                             f"either within {ROLL_CALL_S:.0f} s. {advice}")
    one = len(missing) == 1
    return RankLostError(f"{_describe(missing)} {'does' if one else 'do'} not answer: rank {comm.get_rank()} waited "
                         f"{timeout} for {'it' if one else 'them'} in a collective, and {'it' if one else 'they'} "
                         f"missed the roll call at {host}:{port} (stopped, hung, or cut off from the network). {advice}")


def roll_call() -> Optional[List[int]]:
    """The ranks that do not answer at the job's store within ROLL_CALL_S; None when the
    store cannot be asked (it does not answer, or the job has none)."""
    if not _STORE.get("address"):
        return None
    answer: List[Optional[List[int]]] = [None]
    # In a thread: a store whose process is stopped accepts the connection and then never
    # replies, and the client's own timeout does not cover that first exchange.
    asking = threading.Thread(target=_ask_store, args=(answer,), daemon=True, name="vov3d-roll-call")
    asking.start()
    asking.join(2 * ROLL_CALL_S + 1)
    return answer[0]


def _ask_store(answer: List[Optional[List[int]]]) -> None:
    host, port = _STORE["address"]
    world, prefix = len(_PEERS), f"vov3d/roll_call/{_STORE['joins']}"
    try:
        store = dist.TCPStore(host, port, is_master=False, timeout=datetime.timedelta(seconds=ROLL_CALL_S))
        store.set(f"{prefix}/rank{comm.get_rank()}", "1")
        answered = store.add(f"{prefix}/answered", 1)
        deadline = time.monotonic() + ROLL_CALL_S
        while answered < world and time.monotonic() < deadline:
            time.sleep(0.2)
            answered = store.add(f"{prefix}/answered", 0)
        answer[0] = [r for r in range(world) if not store.check([f"{prefix}/rank{r}"])]
    except (RuntimeError, OSError):  # torch's store errors are RuntimeErrors
        pass


def _describe(ranks: Sequence[int]) -> str:
    if len(ranks) == 1:
        peer = _PEERS[ranks[0]]
        return f"rank {ranks[0]} (host {peer['host']}, pid {peer['pid']})"
    hosts = sorted({_PEERS[r]["host"] for r in ranks})
    return f"ranks {short_list(list(ranks))} (on {', '.join(hosts)})"


def _who_was_at(ip: Optional[str]) -> str:
    """The rank (or ranks) that an address of a lost peer can belong to."""
    me = comm.get_rank()
    mine = _PEERS[me]
    others = [(r, p) for r, p in enumerate(_PEERS) if r != me]
    if ip is None:
        candidates = others
    elif ip.startswith("127.") or ip == "::1" or ip in mine["addresses"]:
        candidates = [(r, p) for r, p in others if p["host"] == mine["host"]]
    else:
        candidates = [(r, p) for r, p in others if ip in p["addresses"]]
    if all(p["host"] == mine["host"] for _, p in candidates):
        candidates = [(r, p) for r, p in candidates if _process_gone(p["pid"])] or candidates
    if len(candidates) == 1:
        rank, peer = candidates[0]
        return f"rank {rank} (host {peer['host']}, pid {peer['pid']})"
    if candidates:
        hosts = sorted({p["host"] for _, p in candidates})
        return f"one of ranks {short_list([r for r, _ in candidates])} (on {', '.join(hosts)})"
    return f"the process at {ip}"


def _process_gone(pid: int) -> bool:
    """Whether process `pid` of this machine has ended (a zombie counts as ended)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except OSError:
            pass
        return False
