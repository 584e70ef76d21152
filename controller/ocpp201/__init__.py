"""OCPP 2.0.1 adapter: the dialect, the client and its wording of the core's states."""
