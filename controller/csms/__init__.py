"""The version-neutral CSMS side: connection, OCPP-J RPC, outbox, heartbeat, security profile.

Importing it defers what websockets imports and a start does not use (controller/csms/
deferred.py; before any module here imports websockets)."""

from controller.csms.deferred import defer_websockets_unused

defer_websockets_unused()
