"""OCPP 1.6J adapter: the core port as OCPP-J messages, CSMS requests as core events."""

# The latest firmware status the CSMS has not confirmed yet (controller/ocpp16/firmware.py),
# sent again after a restart: its row makes the composition root load the firmware code.
FIRMWARE_UNSENT_KEY = "ocpp16.firmware.unsent"
