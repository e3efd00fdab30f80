"""Checks of the deployment files in deploy/ against each other and the code, without an engine."""
