"""The sweep runtime: launching, recording, watching, resuming and tabulating the jobs of a
Hydra multirun, knowing nothing of the app, which talks to it through :mod:`.record`."""
