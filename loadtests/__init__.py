"""Load tests: the fan-out benchmark (`python -m loadtests.fanout`), its baselines and locust."""
