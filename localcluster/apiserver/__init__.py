"""An in-memory Kubernetes API server (a subset with upstream semantics) and its clients.

``Store`` holds the objects and the watch history; ``InProcessClient`` and ``HttpClient``
implement ``localcluster.apiclient.ApiClient``; ``ApiServer`` serves the store over HTTP for
kubectl, the official Python client and node agents in other processes.
"""

from localcluster.apiserver.client import HttpClient, InProcessClient
from localcluster.apiserver.events import event_for, record_event
from localcluster.apiserver.server import ApiServer
from localcluster.apiserver.store import Store

__all__ = ["ApiServer", "HttpClient", "InProcessClient", "Store", "event_for", "record_event"]
