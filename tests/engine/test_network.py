"""The network interface a job talks over: the route to the rendezvous host, unless the user
chose one (the two-machine runs that need it are in tests/engine/test_two_machines.py)."""
import logging

import pytest

from vov3d.engine import network


@pytest.fixture(autouse=True)
def no_interface_set(monkeypatch):
    for variable in network.IFNAME_VARIABLES.values():
        monkeypatch.setenv(variable, "")  # removed again after the test, whatever the code sets


def test_the_route_to_a_host_names_the_interface_and_the_local_address():
    assert network.route_to("127.0.0.1") == ("lo", "127.0.0.1")
    assert network.route_to("localhost")[0] == "lo"
    assert network.route_to("no-such-host.invalid") is None
    assert "127.0.0.1" not in network.machine_addresses()


def test_the_interface_routing_to_the_rendezvous_host_is_chosen_and_logged(caplog):
    with caplog.at_level(logging.INFO, logger="vov3d.engine.network"):
        assert network.choose_interface("gloo", "127.0.0.1", multi_machine=False) == "lo"
    assert network.os.environ["GLOO_SOCKET_IFNAME"] == "lo"
    assert "gloo talks over interface lo (127.0.0.1), the route to 127.0.0.1; set GLOO_SOCKET_IFNAME" in caplog.text
    assert network.choose_interface("nccl", "127.0.0.1", multi_machine=False) == "lo"
    assert network.os.environ["NCCL_SOCKET_IFNAME"] == "=lo"  # an exact name, not a prefix
    assert network.choose_interface("mpi", "127.0.0.1", multi_machine=False) is None


def test_an_interface_the_user_set_wins(monkeypatch, caplog):
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "eth7")
    with caplog.at_level(logging.INFO, logger="vov3d.engine.network"):
        assert network.choose_interface("gloo", "127.0.0.1", multi_machine=True) == "eth7"
    assert network.os.environ["GLOO_SOCKET_IFNAME"] == "eth7"
    assert "GLOO_SOCKET_IFNAME=eth7 (set by the user)" in caplog.text


def test_a_hostname_on_loopback_is_said_in_one_line_on_multi_machine_jobs_only(monkeypatch, caplog):
    monkeypatch.setattr(network, "route_to", lambda host: ("eth0", "10.77.0.2"))
    monkeypatch.setattr(network, "hostname_loopback_address", lambda: "127.0.1.1")
    monkeypatch.setattr(network.socket, "gethostname", lambda: "node-b")
    with caplog.at_level(logging.WARNING, logger="vov3d.engine.network"):
        network.choose_interface("gloo", "10.77.0.1", multi_machine=False)
        assert not caplog.records
        assert network.choose_interface("gloo", "10.77.0.1", multi_machine=True) == "eth0"
    assert [r.getMessage() for r in caplog.records] == [
        "The hostname node-b resolves to the loopback address 127.0.1.1 (see /etc/hosts): gloo would offer it to the "
        "other machines, which cannot reach it. Using interface eth0 (10.77.0.2) instead."]


def test_a_loopback_rendezvous_host_on_a_multi_machine_job_is_warned_about(caplog):
    with caplog.at_level(logging.WARNING, logger="vov3d.engine.network"):
        network.choose_interface("gloo", "localhost", multi_machine=True)
    assert "The rendezvous host localhost is this machine's loopback" in caplog.text
    assert "Give an address of shard 0 that every machine can reach." in caplog.text


def test_a_host_that_does_not_resolve_leaves_the_choice_to_the_backend(caplog):
    with caplog.at_level(logging.WARNING, logger="vov3d.engine.network"):
        assert network.choose_interface("gloo", "no-such-host.invalid", multi_machine=True) is None
    assert network.os.environ["GLOO_SOCKET_IFNAME"] == ""
    assert "Cannot tell which interface reaches no-such-host.invalid" in caplog.text
