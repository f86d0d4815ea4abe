"""The two-stage pipeline over a run folder (used by the CLI; usable from Python)."""
