"""An in-memory Kubernetes API server (a subset with upstream semantics) and its clients.

``Store`` holds the objects and the watch history; ``InProcessClient`` and ``HttpClient``
implement ``localcluster.apiclient.ApiClient``; ``ApiServer`` serves the store over HTTP for
kubectl, the official Python client and node agents in other processes.
"""

from localcluster.apiserver.client import InProcessClient
from localcluster.apiserver.httpclient import HttpClient
from localcluster.apiserver.server import ApiServer
from localcluster.apiserver.store import Store

__all__ = ["ApiServer", "HttpClient", "InProcessClient", "Store"]
