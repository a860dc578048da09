"""edgefl: federated learning on Raspberry Pi and NVIDIA Jetson fleets.

The package is laid out by runtime role, and data flows one way:
config -> hardware (board) -> profile -> daemon -> Flower app -> backend.
Nothing on the left of that chain imports anything on its right, and nothing
here imports a training framework: backends import theirs lazily.
"""

__version__ = "0.1.0"
