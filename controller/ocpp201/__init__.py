"""The OCPP 2.0.1 adapter: dialect (rpc), client (boot, heartbeat, statuses), device model (dm/)."""
