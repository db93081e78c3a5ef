"""loadgen: Locust load that records each request's wire details (see docs/architecture.md)."""
