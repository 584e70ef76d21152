"""Version-neutral remote maintenance: file transfers, firmware updates, diagnostics archives."""
