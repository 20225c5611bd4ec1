"""The sweep runtime: launching, recording, watching, resuming and tabulating the jobs of a
Hydra multirun. It knows nothing of the app it runs: the app names its metrics in config (its
``record`` block), and talks to the runtime through the run record (:mod:`.record`)."""
