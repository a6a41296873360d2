"""Two machines emulated on one: two Linux network namespaces joined by a veth pair.

Each "machine" has its own network stack (loopback, one interface with a 10.77.0.x address
on the private link between them, nothing else), its own hostname (a UTS namespace) and its
own /etc/hosts, which maps the hostname to 127.0.1.1 as Debian and Ubuntu do: the setting in
which gloo offers the other machine a loopback address. Files and processes are shared with
the host (one file system, as a cluster's shared OUTPUT_DIR). Everything is made on entry
and removed on exit, also after a failure; it needs root and `ip`/`unshare`.

By hand (prints what each step measured):

    sudo python tests/engine/two_machines.py --out /tmp/two-machines
"""
import argparse
import itertools
import os
import shutil
import signal
import subprocess
import sys
from typing import List, Optional, Sequence

SUBNET = "10.77.0"
HOSTNAMES = ("node-a", "node-b")
_COUNTER = itertools.count()


def unavailable() -> Optional[str]:
    """Why two namespaces cannot be made here, or None."""
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    missing = [tool for tool in ("ip", "unshare", "hostname") if shutil.which(tool) is None]
    if missing:
        return f"needs {', '.join(missing)} on PATH"
    probe = f"vov3d-probe-{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"cannot create a network namespace: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "delete", probe], capture_output=True)
    return None


def _remove_orphans() -> None:
    """Namespaces of harnesses whose process was killed before it could clean up."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
    for name in listed:
        parts = name.split("-")
        if len(parts) == 4 and parts[0] == "vov3d" and parts[1].isdigit() and not os.path.exists(f"/proc/{parts[1]}"):
            subprocess.run(["ip", "netns", "delete", name], capture_output=True)
            shutil.rmtree(f"/etc/netns/{name}", ignore_errors=True)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


class TwoMachines:
    """Machine 0 (node-a, 10.77.0.1) and machine 1 (node-b, 10.77.0.2)."""

    def __init__(self) -> None:
        tag = f"{os.getpid()}-{next(_COUNTER)}"
        self.namespaces = [f"vov3d-{tag}-{side}" for side in "ab"]
        self.interfaces = ["vov3d-a", "vov3d-b"]
        self.processes: List[subprocess.Popen] = []

    def address(self, node: int) -> str:
        return f"{SUBNET}.{node + 1}"

    def __enter__(self) -> "TwoMachines":
        try:
            self._create()
        except BaseException:
            self._remove()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._remove()

    def _create(self) -> None:
        _remove_orphans()
        for ns, host in zip(self.namespaces, HOSTNAMES):
            _ip("netns", "add", ns)
            os.makedirs(f"/etc/netns/{ns}", exist_ok=True)  # `ip netns exec` mounts these over /etc
            with open(f"/etc/netns/{ns}/hosts", "w") as f:
                f.write(f"127.0.0.1 localhost\n127.0.1.1 {host}\n")
        (a, b), (ia, ib) = self.namespaces, self.interfaces
        _ip("link", "add", ia, "netns", a, "type", "veth", "peer", "name", ib, "netns", b)
        for node, (ns, interface) in enumerate(zip(self.namespaces, self.interfaces)):
            _ip("-n", ns, "addr", "add", f"{self.address(node)}/24", "dev", interface)
            _ip("-n", ns, "link", "set", interface, "up")
            _ip("-n", ns, "link", "set", "lo", "up")

    def _remove(self) -> None:
        for node in range(2):
            self.kill(node)
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        for ns in self.namespaces:
            subprocess.run(["ip", "netns", "delete", ns], capture_output=True)  # takes the veth pair along
            shutil.rmtree(f"/etc/netns/{ns}", ignore_errors=True)

    def pids(self, node: int) -> List[int]:
        found = subprocess.run(["ip", "netns", "pids", self.namespaces[node]], capture_output=True, text=True)
        return [int(p) for p in found.stdout.split()]

    def kill(self, node: int, signum: int = signal.SIGKILL) -> None:
        """Signal every process of a machine (SIGKILL: the machine is lost)."""
        for pid in self.pids(node):
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    def popen(self, node: int, argv: Sequence[str], env: Optional[dict] = None, **kwargs) -> subprocess.Popen:
        """Start `argv` on machine `node`, under its hostname."""
        command = ["ip", "netns", "exec", self.namespaces[node], "unshare", "--uts", "sh", "-c",
                   'hostname "$0" && exec "$@"', HOSTNAMES[node], *argv]
        process = subprocess.Popen(command, env=env, **kwargs)
        self.processes.append(process)
        return process


def _main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="a folder for the toy data and the runs")
    args = parser.parse_args()
    reason = unavailable()
    if reason:
        print(f"two_machines.py: {reason}", file=sys.stderr)
        return 2
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.path.insert(0, repo)
    from tests.engine import test_two_machines as checks

    return checks.run_by_hand(args.out)


if __name__ == "__main__":
    sys.exit(_main())
