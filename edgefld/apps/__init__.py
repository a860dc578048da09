"""edgefl's Flower apps (Message API): the ServerApp, its strategy and the ClientApp.

They read everything from Flower's ``Context`` (run config, node config) and
know nothing of the daemons, so the same apps run under the deployment runtime
(SuperLink/SuperNode, submitted as a thin FAB) and under Flower's simulation
engine. Their module-level imports are light on purpose: Flower starts a new
ClientApp process for every message, and each pays for what it imports.
"""
