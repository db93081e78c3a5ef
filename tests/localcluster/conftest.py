"""Fixtures shared by the API server's tests: each module defines its own ``cluster`` (an
``ApiServer`` in a ``ServerThread``, configured as that module needs)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from localcluster.apiserver.thread import ServerThread


@pytest.fixture
def api(cluster: ServerThread) -> Iterator[k8s.ApiClient]:
    """The official client, configured from the module's cluster's kubeconfig."""
    api_client = k8s_config.new_client_from_config(config_file=str(cluster.kubeconfig))
    yield api_client
    api_client.close()
