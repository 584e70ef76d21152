"""The OCPP 2.0.1 adapter: the device model (dm/); the client comes next."""
