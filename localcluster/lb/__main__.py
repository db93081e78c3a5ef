"""``python -m localcluster.lb --api-socket PATH --token T --config cluster.json --truth PATH``,
started inside the LB namespace by ``start_real_nodes``."""

from __future__ import annotations

from localcluster.dataplane.process import agent_main
from localcluster.lb.balancer import run_lb

if __name__ == "__main__":
    agent_main("cloud load balancer", run_lb, needs_node=False)
