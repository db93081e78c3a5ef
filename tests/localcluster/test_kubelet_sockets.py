"""The socket table the kubelet reads to learn when any app listens, without the app's help."""

from __future__ import annotations

import os
import socket

from localcluster.kubelet.sockets import Listener, listening, parse_listeners, serves

# /proc/net/tcp as the kernel prints it: listeners first, then every other socket
TABLE = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1
   1: 0564A8C0:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1
   2: 0564A8C0:1F40 0264A8C0:D431 01 00000000:00000000 00:00000000 00000000     0        0 3 1
   3: 0564A8C0:1F41 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4 1
"""
TABLE6 = """\
  sl  local_address                         remote_address                        st
   0: 00000000000000000000000000000000:1F40 00000000000000000000000000000000:0000 0A
   1: 0000000000000000FFFF00000564A8C0:1F41 00000000000000000000000000000000:0000 0A
"""


def test_only_the_listening_section_is_read() -> None:
    """The established socket ends the section: the listener printed after it is not read
    (the kernel never prints one there; stopping early keeps the read cheap)."""
    assert list(parse_listeners(TABLE.splitlines())) == [
        Listener("0.0.0.0", 8080),
        Listener("192.168.100.5", 8000),
    ]


def test_ipv6_and_v4_mapped_addresses() -> None:
    assert list(parse_listeners(TABLE6.splitlines())) == [
        Listener("::", 8000),
        Listener("192.168.100.5", 8001),
    ]


def test_a_listener_serves_the_pod_on_its_address_or_any_in_its_own_namespace() -> None:
    ports = frozenset({8000})
    assert serves(Listener("192.168.100.5", 8000), "192.168.100.5", ports, wildcard_ok=False)
    assert serves(Listener("::", 8000), "192.168.100.5", ports, wildcard_ok=True)
    assert not serves(Listener("::", 8000), "192.168.100.5", ports, wildcard_ok=False)
    assert not serves(Listener("192.168.100.5", 9000), "192.168.100.5", ports, wildcard_ok=True)
    assert serves(Listener("192.168.100.5", 9000), "192.168.100.5", frozenset(), True)


def test_listening_reads_this_process_table() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        port = server.getsockname()[1]
        assert not listening(os.getpid(), "127.0.0.1", frozenset({port}), None)
        server.listen()
        assert listening(os.getpid(), "127.0.0.1", frozenset({port}), None)
    assert not listening(os.getpid(), "127.0.0.1", frozenset({port}), None)


def test_a_process_outside_the_pods_namespace_is_not_read() -> None:
    """Until nsenter has joined the Pod's namespace, the table would be someone else's."""
    assert not listening(os.getpid(), "127.0.0.1", frozenset(), "/nonexistent/netns")
