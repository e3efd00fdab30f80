"""REST handlers, one module per resource; routes are declared in `gateway.app`."""
