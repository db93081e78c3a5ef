"""The cloud load balancer emulator: external IPs, DNAT to health-checked targets."""
