"""The local cluster's control loops — deployment, replicaset, endpointslice, scheduler,
garbage collector — as asyncio tasks over shared informers. They talk to the API server only
through ``localcluster.apiclient.ApiClient``, like upstream controllers through client-go.

``start_controllers(client, config)`` starts them all and returns a handle whose ``stop()``
cancels every task.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from localcluster.apiclient import ApiClient
from localcluster.config import ClusterConfig
from localcluster.controllers.deployment import DeploymentController
from localcluster.controllers.endpointslice import EndpointSliceController
from localcluster.controllers.garbagecollector import GarbageCollector
from localcluster.controllers.informer import Controller, Informers
from localcluster.controllers.replicaset import ReplicaSetController
from localcluster.controllers.scheduler import Scheduler
from localcluster.events import EventRecorder
from localcluster.informer import cancel_tasks

SYNC_TIMEOUT_S = 30.0


@dataclass
class ControllerHandle:
    informers: Informers
    controllers: list[Controller]
    recorders: list[EventRecorder]
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def stop(self) -> None:
        await cancel_tasks(self.tasks)
        for controller in self.controllers:
            controller.queue.close()
        for recorder in self.recorders:
            await recorder.close()


async def start_controllers(
    client: ApiClient, config: ClusterConfig | None = None
) -> ControllerHandle:
    """Start informers, wait for their first list (as kube-controller-manager waits for cache
    sync), then start every controller's worker."""
    config = config or ClusterConfig()
    informers = Informers(client)
    recorders = {
        name: EventRecorder(client, name)
        for name in ("deployment-controller", "replicaset-controller", "default-scheduler")
    }
    controllers: list[Controller] = [
        DeploymentController(client, informers, recorders["deployment-controller"]),
        ReplicaSetController(client, informers, recorders["replicaset-controller"]),
        EndpointSliceController(client, informers, config.endpoint_batch_delay_s),
        Scheduler(client, informers, recorders["default-scheduler"]),
        GarbageCollector(client, informers),
    ]
    handle = ControllerHandle(informers, list(controllers), list(recorders.values()))
    handle.tasks += [
        asyncio.create_task(i.run(), name=f"informer/{i.resource}") for i in informers.all()
    ]
    try:
        await asyncio.wait_for(
            asyncio.gather(*(i.synced.wait() for i in informers.all())), SYNC_TIMEOUT_S
        )
    except BaseException:
        await handle.stop()
        raise
    handle.tasks += [asyncio.create_task(c.run(), name=f"controller/{c.name}") for c in controllers]
    return handle


__all__ = ["ControllerHandle", "start_controllers"]
