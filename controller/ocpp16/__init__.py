"""OCPP 1.6J adapter: the core port as OCPP-J messages, CSMS requests as core events."""
