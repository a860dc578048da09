"""`edgefl simulate`: edgefl's ServerApp and ClientApp, unchanged, on Flower's simulation engine (Ray),
with a virtual fleet of boards described in edgefld.hardware.boards."""
