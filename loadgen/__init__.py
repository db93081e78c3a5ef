"""loadgen (see DESIGN §2)."""
