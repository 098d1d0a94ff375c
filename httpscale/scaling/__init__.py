"""Pure scaling arithmetic shared by the scaler and local mode (no I/O, no event loop)."""
