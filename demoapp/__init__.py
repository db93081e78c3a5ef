"""demoapp: the workload under test (see docs/architecture.md#rooms-and-import-rules)."""
