"""What a federation can train: the task list is data, not branches.

A task names its dataset (``edgefld.data``), its model (each backend builds
the model of that name), the input layout and the seed's optimiser settings.
Adding a task is adding a row here, a dataset and a model per backend.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Task:
    name: str
    dataset: str  # key of edgefld.data.DATASETS
    model: str  # model name every backend knows how to build
    input_shape: tuple[int, int, int]  # H, W, C as stored (uint8)
    num_classes: int
    pixel_max: float  # stored pixel values lie in 0..pixel_max
    mean: tuple[float, ...]  # per channel, after scaling to 0..1
    std: tuple[float, ...]
    learning_rate: float = 0.01  # SGD, as the seed
    momentum: float = 0.9
    description: str = ""
    summary: str = ""  # a few words, for the config's documentation of [server] task
    # MobileNetV3-small trains at ~130-230 samples/s on one x86 core (bench/bench_backends.py): boards of
    # 1 GB or less are not offered a heavy task (edgefld.profile), and a Jetson takes one only in a power
    # mode of at least [client] heavy_task_min_watts (edgefld.guards).
    heavy: bool = False


TASKS: dict[str, Task] = {
    task.name: task
    for task in (
        Task("cifar10", "cifar10", "mobilenet_v3_small", (32, 32, 3), 10, 255.0,
             (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
             description="CIFAR-10, MobileNetV3-small (torchvision, num_classes=10), as the seed",
             summary="MobileNetV3-small", heavy=True),
        Task("mnist", "mnist", "lenet5", (28, 28, 1), 10, 255.0, (0.1307,), (0.3081,),
             description="MNIST, the seed's small CNN (conv 6@5x5, pool, conv 16@5x5, pool, fc 120, 84, 10)",
             summary="small CNN"),
        Task("digits", "digits", "digits_mlp", (8, 8, 1), 10, 16.0, (0.0,), (1.0,),
             description="8x8 handwritten digits shipped with edgefl, a 64-64-10 MLP: trains in seconds offline",
             summary="8x8 handwritten digits, shipped with edgefl: needs no download"),
    )
}


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise KeyError(f'unknown task "{name}"; tasks: {", ".join(TASKS)}') from None
