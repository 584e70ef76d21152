"""The OCPP 2.0.1 adapter: dialect (rpc), client (boot, heartbeat, statuses), device model (dm/)."""

# The latest FirmwareStatusNotification the CSMS has not confirmed (controller/ocpp201/
# firmware.py), sent again after a restart: its row makes the composition root load the
# firmware code at start.
FIRMWARE_UNSENT_KEY = "ocpp201.firmware.unsent"
