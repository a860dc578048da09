"""The ServerApp: FedAvg over every node, train + evaluate each round.

Each round's end is logged with its wall-clock time (``plainflower: round N done at T``):
bench/bench_rounds.py reads the lines from the run's log (the Control API's StreamLogs)
to get the round period. The evaluate_fn does nothing else.
"""

import time
from logging import INFO

import numpy as np
from flwr.app import ArrayRecord, Context
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

app = ServerApp()


def mark_round(server_round: int, arrays: ArrayRecord) -> None:
    log(INFO, "plainflower: round %d done at %.3f", server_round, time.time())


@app.main()
def main(grid: Grid, context: Context) -> None:
    rounds = int(context.run_config["num-server-rounds"])
    initial = ArrayRecord([np.zeros((10, 10), dtype=np.float32), np.zeros(10, dtype=np.float32)])
    strategy = FedAvg(fraction_train=1.0, fraction_evaluate=1.0, min_train_nodes=2, min_evaluate_nodes=2,
                      min_available_nodes=2)
    strategy.start(grid=grid, initial_arrays=initial, num_rounds=rounds, evaluate_fn=mark_round)
