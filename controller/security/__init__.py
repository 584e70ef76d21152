"""Version-neutral security pieces: the security log and its events, TLS, certificates."""
