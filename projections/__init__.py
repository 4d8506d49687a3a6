"""Read models: pure functions from vmsnap's events to view rows."""
