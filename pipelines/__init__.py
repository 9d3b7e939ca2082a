"""The ``lgeom`` command-line steps (train, connect, probe, study, ...), their config presets and the study runner."""
