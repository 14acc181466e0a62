"""Stage reports built from pure functions (one module per stage)."""
