"""``python -m localcluster.node --node node-1 --api-socket PATH --token T --config cluster.json
--truth PATH``, started inside the node's namespace by ``start_real_nodes``."""

from __future__ import annotations

from localcluster.dataplane.process import agent_main
from localcluster.node.agent import run_node

if __name__ == "__main__":
    agent_main("node agent", run_node, needs_node=True)
