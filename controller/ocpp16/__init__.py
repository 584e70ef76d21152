"""OCPP 1.6J adapter: turns the core port into OCPP-J messages and CSMS requests into core events."""
