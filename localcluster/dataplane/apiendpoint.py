"""The API server's endpoint inside the emulated network, where the client namespace reaches it
the way a workstation reaches a real cluster's API endpoint: through the network, at an address
that is not loopback (``https://<LB's client-side address>:6443``).

The server process itself listens there: a TCP socket created by a thread that has entered the
LB namespace (``setns`` changes only the calling thread's namespace, and a socket stays in the
namespace it was created in) is handed to the server, which serves HTTPS on it next to its
loopback port. No relay process, no route from the host namespace into the emulated network.
"""

from __future__ import annotations

import ctypes
import os
import socket
import threading

from localcluster.dataplane.addressing import AddressPlan

API_PORT = 6443  # kube-apiserver's --secure-port default
_CLONE_NEWNET = 0x40000000
_NETNS_DIR = "/run/netns"


def api_endpoint(plan: AddressPlan) -> tuple[str, int]:
    """Address and port of the in-network endpoint: the client's gateway, in the LB namespace."""
    return plan.lb_client_ip, API_PORT


def _bound_socket(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


def listen_in_netns(netns: str, host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` inside network namespace ``netns`` (root only)."""
    made: list[socket.socket] = []
    failed: list[BaseException] = []

    def in_namespace() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        try:
            fd = os.open(os.path.join(_NETNS_DIR, netns), os.O_RDONLY)
            try:
                if libc.setns(fd, _CLONE_NEWNET) != 0:
                    errno = ctypes.get_errno()
                    raise OSError(errno, f"setns into {netns}: {os.strerror(errno)}")
            finally:
                os.close(fd)
            made.append(_bound_socket(host, port))
        except BaseException as exc:  # handed to the caller's thread
            failed.append(exc)

    worker = threading.Thread(target=in_namespace, name=f"listen-in-{netns}")
    worker.start()  # the thread ends here, and its namespace with it; the socket stays
    worker.join()
    if failed:
        raise failed[0]
    return made[0]
