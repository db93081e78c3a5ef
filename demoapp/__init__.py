"""demoapp (see DESIGN §2)."""
