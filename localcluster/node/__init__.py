"""The node agent: one process per node, inside the node's network namespace."""
