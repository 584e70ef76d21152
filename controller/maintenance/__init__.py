"""Version-neutral remote maintenance: file transfers, firmware updates, diagnostics archives."""

# The settings row of a firmware update in progress (controller/maintenance/firmware.py): the
# composition root loads the firmware code at start only when it exists.
FIRMWARE_JOB_KEY = "firmware.job"
