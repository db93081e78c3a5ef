"""localcluster (see DESIGN §2)."""
