"""The ClientApp: `flwr new`'s NumPy template (random "training" of a tiny model)."""

import time

import numpy as np
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    started = time.perf_counter()
    arrays = msg.content["arrays"].to_numpy_ndarrays()
    trained = [a + np.random.rand(*a.shape).astype(a.dtype) * 0.01 for a in arrays]
    metrics = MetricRecord({"train_loss": float(np.random.rand()), "num-examples": 10,
                            "train_seconds": time.perf_counter() - started})
    return Message(RecordDict({"arrays": ArrayRecord(trained), "metrics": metrics}), reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    metrics = MetricRecord({"eval_loss": float(np.random.rand()), "eval_acc": float(np.random.rand()),
                            "num-examples": 10})
    return Message(RecordDict({"metrics": metrics}), reply_to=msg)
