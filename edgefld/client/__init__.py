"""The client role: the daemon that keeps a board in the federation."""
