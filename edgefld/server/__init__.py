"""The server role: the daemon that runs the SuperLink and drives the training run."""
