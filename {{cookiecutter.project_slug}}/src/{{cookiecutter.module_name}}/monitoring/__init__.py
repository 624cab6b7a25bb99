"""Model monitoring: the reference profile, live drift in the server, the `monitor` command."""
