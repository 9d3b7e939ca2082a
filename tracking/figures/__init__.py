"""Per-run figures (matplotlib, Agg backend): ``paths`` for connectivity results, ``probes`` for curvature
probes. Each function takes plain arrays / lgeom results and a file path, writes a PNG and returns the path.
"""
