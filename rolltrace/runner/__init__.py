"""The experiment runner: backends, cluster start, the Kubernetes adapter, watcher, capture,
manifests and LB probe. ``experiment.Experiment`` drives one run through ``Session``."""
