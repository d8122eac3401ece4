"""An in-memory network with a virtual clock that drives many unmodified protocol cores."""
