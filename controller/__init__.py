"""evsed controller: everything that is not hardware (state machine, OCPP, storage, CLI, API)."""
