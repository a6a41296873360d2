"""Which network interface the processes of a job talk over.

gloo (and NCCL's sockets) advertise to the other ranks the address this machine's hostname
resolves to. Where /etc/hosts maps the hostname to a loopback address (Debian's and
Ubuntu's default: 127.0.1.1) every machine then offers the others 127.x, and a multi-machine
job fails in its first collective after minutes of retries ("Gloo connectFullMesh failed ...
Connection refused, remote=[127.0.1.1]"). Unless the user set GLOO_SOCKET_IFNAME /
NCCL_SOCKET_IFNAME, the interface whose address routes to the rendezvous host (shard 0, or
MASTER_ADDR) is chosen instead, and logged.
"""
import ipaddress
import logging
import os
import socket
from typing import Dict, List, Optional, Tuple

import psutil

logger = logging.getLogger(__name__)

# The variable that names the interface, per backend.
IFNAME_VARIABLES = {"gloo": "GLOO_SOCKET_IFNAME", "nccl": "NCCL_SOCKET_IFNAME"}
# What this process set them to (a later phase of the same run chooses again).
_CHOSEN: Dict[str, str] = {}


def _resolve(host: str) -> Optional[Tuple[int, str]]:
    """(address family, address) of `host`, IPv4 first; None when it does not resolve."""
    try:
        found = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return None
    found.sort(key=lambda entry: entry[0] != socket.AF_INET)
    return (found[0][0], found[0][4][0]) if found else None


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.split("%")[0]).is_loopback
    except ValueError:
        return False


def _interfaces() -> Dict[str, List[str]]:
    """Every interface of this machine with its IPv4/IPv6 addresses (without %scope)."""
    families = (socket.AF_INET, socket.AF_INET6)
    return {name: [a.address.split("%")[0] for a in addresses if a.family in families]
            for name, addresses in psutil.net_if_addrs().items()}


def machine_addresses() -> List[str]:
    """This machine's addresses on all interfaces but loopback."""
    return [a for addresses in _interfaces().values() for a in addresses if not _is_loopback(a)]


def route_to(host: str) -> Optional[Tuple[str, str]]:
    """(interface, local address) this machine reaches `host` through, by the routing table
    (a UDP socket is connected, which sends nothing); None when `host` does not resolve or
    no interface holds the address."""
    resolved = _resolve(host)
    if resolved is None:
        return None
    family, address = resolved
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect((address, 9))
            local = probe.getsockname()[0].split("%")[0]
    except OSError:
        return None
    name = next((n for n, addresses in _interfaces().items() if local in addresses), None)
    return (name, local) if name is not None else None


def hostname_loopback_address() -> Optional[str]:
    """The loopback address this machine's hostname resolves to, if it does."""
    resolved = _resolve(socket.gethostname())
    return resolved[1] if resolved is not None and _is_loopback(resolved[1]) else None


def choose_interface(backend: str, host: str, multi_machine: bool) -> Optional[str]:
    """Make `backend` talk over the interface that routes to `host`, unless the user chose
    one; returns the interface used, None when it is left to the backend."""
    variable = IFNAME_VARIABLES.get(backend)
    if variable is None:
        return None
    if os.environ.get(variable) and os.environ[variable] != _CHOSEN.get(variable):
        logger.info("%s=%s (set by the user): %s talks over that interface.", variable, os.environ[variable], backend)
        return os.environ[variable]
    found = route_to(host)
    loopback = hostname_loopback_address()
    if found is None:
        logger.warning("Cannot tell which interface reaches %s (it does not resolve, or no interface routes to it); "
                       "%s chooses by itself. Set %s if the processes cannot connect.", host, backend, variable)
        return None
    name, address = found
    if multi_machine and _is_loopback(address):
        logger.warning("The rendezvous host %s is this machine's loopback (%s), but the job spans several "
                       "machines: the others cannot reach it. Give an address of shard 0 that every machine "
                       "can reach.", host, address)
    elif multi_machine and loopback is not None:
        logger.warning("The hostname %s resolves to the loopback address %s (see /etc/hosts): %s would offer it "
                       "to the other machines, which cannot reach it. Using interface %s (%s) instead.",
                       socket.gethostname(), loopback, backend, name, address)
    # NCCL takes the name as a prefix ("eth0" would match eth01 too) unless it starts with "=".
    os.environ[variable] = _CHOSEN[variable] = "=" + name if backend == "nccl" else name
    logger.info("%s talks over interface %s (%s), the route to %s; set %s to choose another.", backend, name,
                address, host, variable)
    return name
