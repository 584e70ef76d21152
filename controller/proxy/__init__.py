"""`evsed proxy`: one OCPP-J front for any charger, relayed to several backends (issue 15)."""
