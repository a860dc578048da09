"""How two float32 implementations of one training step are compared, and why so.

Every backend computes a step in float32, each in its own order (its kernels' summation
order, fused or approximated ops: XNNPACK, LiteRT's default delegate, computes HARD_SWISH
as x * clamp(x/6 + 1/2, 0, 1) and EXP by a polynomial), and the kernel chosen depends on
the CPU (AVX-512, AVX2 or NEON). So two runs of the same step differ by some float32
roundings, and the reference here is torch in float64: the exact step, to float32's
eyes, whatever CPU it runs on.

What rounding alone cannot explain is a kink. ReLU (at 0), Hardswish and Hardsigmoid (at
-3 and 3) and max pooling (between a window's two largest values) switch their gradient
on a comparison. An activation that lies within a rounding of a kink goes to either side
depending on the implementation, and that element's gradient is then passed or dropped:
a real, legitimate difference far above rounding. MobileNetV3 on 20 CIFAR images has
about a million such inputs a step, and the nearest lies 1e-9 to 1e-6 (relative to its
layer's largest input) from a kink at almost every step: measured along the float64
trajectory of test_litert_backend's case, 8e-7, 2e-7, 3e-7, 2e-6 and 8e-10 for steps 1-5.
A single such flip moved a weight by 2e-5 in one step, and steps after it carry the
difference on through momentum and BatchNorm: torch float64 itself, started from weights
perturbed by one float32 ulp, ended 2e-5 away from the unperturbed run after 5 steps in
two seeds of four. A multi-step comparison of free-running trajectories is therefore
chaotic for MobileNetV3: it passes or fails by the CPU's kernel choice, not by whether
the implementation is right. (It failed on AVX-512 and on AVX2 with XNNPACK, 1.8e-4 after
5 steps, and passed without XNNPACK, 8e-7: issue 10.)

So the tests compare in lockstep: step k of the implementation under test is compared
with one float64 step taken from the implementation's own state after step k - 1
(weights, BatchNorm statistics and momentum), which keeps every step's comparison a
one-step one however many steps are checked, momentum included. And every comparison
records the float64 reference's kink margin (the smallest relative distance of an
activation to a kink): a difference above the rounding tolerance in a step whose margin is
within the implementations' rounding is reported as such, with where the kink was.
Free-running trajectories are compared only for the models where they are well
conditioned (the MLP and LeNet-5, whose margins stay far above rounding).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

from edgefld.backends import litert_backend
from edgefld.backends.layout import model_layout
from edgefld.tasks import Task

# The relative distance to a kink below which two float32 implementations may take different branches:
# 10x the largest relative difference of activations measured between implementations on any CPU kind
# (MobileNetV3's logits, its deepest activations: 1.5e-6 of their scale, x86-64 AVX-512 and AVX2 and
# aarch64 NEON alike; tests/backends/test_litert_cpu_kinds.py prints them).
KINK_MARGIN = 1.5e-5


@dataclass
class Kinks:
    """Where the float64 step's activations lie near a kink: the nearest (relative distance and a
    description), and every element within KINK_MARGIN, as (distance, call, flat index), that
    ``reference_step(flips=...)`` can send to the other branch."""

    distance: float = float("inf")
    where: str = ""
    near: list[tuple[float, int, int]] = field(default_factory=list)

    def note(self, distance: float, where: str) -> None:
        if distance < self.distance:
            self.distance, self.where = distance, where

    def __str__(self) -> str:
        return f"{self.distance:.2g} ({self.where})"


@dataclass
class Step:
    weights: list[np.ndarray]  # float64
    velocities: list[np.ndarray]  # float64, one per trainable weight, by canonical index
    loss: float
    kinks: Kinks = field(default_factory=Kinks)


# torch's derivatives (the LiteRT models' backward passes use the same conventions, tools/litert_build.py).
def _slope(name: str, x, torch):
    if name == "relu":
        return (x > 0).to(x.dtype)
    if name == "hardswish":
        return torch.where(x < -3, torch.zeros_like(x), torch.where(x <= 3, x / 3 + 0.5, torch.ones_like(x)))
    return ((x > -3) & (x < 3)).to(x.dtype) / 6  # hardsigmoid


def _other_side_slope(name: str, x, torch):
    """The derivative an element would have had on the other side of its nearest kink."""
    if name == "relu":
        return 1 - _slope(name, x, torch)
    if name == "hardswish":
        nearer_low = (x + 3).abs() < (x - 3).abs()
        low = torch.where(x < -3, x / 3 + 0.5, torch.zeros_like(x))
        high = torch.where(x <= 3, torch.ones_like(x), x / 3 + 0.5)
        return torch.where(nearer_low, low, high)
    return 1 / 6 - _slope(name, x, torch)  # hardsigmoid


def _kink_recorder(kinks: Kinks, flips: frozenset[tuple[int, int]] = frozenset()):
    """A torch function mode that notes, before each kinked function runs, how near its input is to
    the kink; and, for the (call, flat index) pairs in ``flips``, gives those elements the derivative
    of the kink's other side (the branch another implementation's rounding may have taken)."""
    import torch
    from torch.nn import functional
    from torch.overrides import TorchFunctionMode

    points = {functional.relu: ("relu", (0.0,)), functional.hardswish: ("hardswish", (-3.0, 3.0)),
              functional.hardsigmoid: ("hardsigmoid", (-3.0, 3.0))}
    pools = {functional.max_pool2d, functional._max_pool2d}  # boolean_dispatch hands on to the second
    calls = {"count": 0}

    class Flipped(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, name, indices):
            ctx.save_for_backward(x)
            ctx.name, ctx.indices = name, indices
            return {"relu": functional.relu, "hardswish": functional.hardswish,
                    "hardsigmoid": functional.hardsigmoid}[name](x)

        @staticmethod
        def backward(ctx, dy):
            (x,) = ctx.saved_tensors
            slope = _slope(ctx.name, x, torch).flatten()
            slope[ctx.indices] = _other_side_slope(ctx.name, x, torch).flatten()[ctx.indices]
            return dy * slope.view_as(x), None, None

    class Recorder(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            # The mode is off while its handler runs: the calls below are the real functions.
            kwargs = kwargs or {}
            if func not in points and func not in pools:
                return func(*args, **kwargs)
            calls["count"] += 1
            call = calls["count"]
            x = args[0].detach()
            scale = float(x.abs().max()) or 1.0
            if func in pools:  # the gap between a window's two largest values, where the largest is not 0
                size = args[1] if len(args) > 1 else kwargs["kernel_size"]
                windows = functional.unfold(x.flatten(0, 1).unsqueeze(1), size, stride=size)
                top = windows.topk(2, dim=1).values
                live = top[:, 0] > 0
                if bool(live.any()):
                    kinks.note(float((top[:, 0] - top[:, 1])[live].min()) / scale, f"max_pool2d #{call} near-tie")
                return func(*args, **kwargs)
            name, kink_points = points[func]
            gap = torch.stack([(x - point).abs() for point in kink_points]).amin(0).flatten() / scale
            index = int(gap.argmin())
            kinks.note(float(gap[index]), f"{name} #{call} input {float(x.flatten()[index]):.9g}")
            for flat in (gap < KINK_MARGIN).nonzero().flatten().tolist():
                kinks.near.append((float(gap[flat]), call, flat))
            chosen = [flat for flip_call, flat in flips if flip_call == call]
            if chosen:
                return Flipped.apply(args[0], name, torch.as_tensor(chosen))
            return func(*args, **kwargs)

    return Recorder()


def trainable(task: Task) -> list[bool]:
    """Per canonical weight: whether SGD moves it (BatchNorm's running statistics it does not)."""
    return [not spec.name.endswith(("running_mean", "running_var")) for spec in model_layout(task.model)]


def reference_step(task: Task, weights: list[np.ndarray], velocities: list[np.ndarray] | None,
                   x: np.ndarray, y: np.ndarray, mask: np.ndarray | None,
                   flips: frozenset[tuple[int, int]] = frozenset(), *, proximal_mu: float = 0.0,
                   anchor: list[np.ndarray] | None = None) -> Step:
    """One momentum-SGD step of ``task``'s torch model in float64 from ``weights`` (any float dtype) and
    ``velocities`` (None: fresh), dropout replaced by ``mask``; with its kinks. ``flips``: elements
    (call, flat index, from ``Step.kinks.near``) that take the other branch of their kink. ``proximal_mu``:
    FedProx's term mu/2 * ||w - anchor||^2 over the trainable weights, added to the loss (autodiff derives
    its gradient; the backends add the gradient itself). The reported loss is the cross-entropy alone, as theirs."""
    import torch

    from edgefld.backends.torch_backend import MomentumSGD
    from edgefld.backends.torch_models import build_model, weight_names

    model = build_model(task).to(torch.float64)
    names = weight_names(task)
    state = dict(zip(names, (torch.as_tensor(np.asarray(w, np.float64)) for w in weights), strict=True))
    model.load_state_dict(state, strict=False)

    class FixedMask(torch.nn.Module):
        def forward(self, features: torch.Tensor) -> torch.Tensor:
            return features * self.mask

    if task.model == "mobilenet_v3_small":  # no mask: dropout off
        fixed = FixedMask()
        fixed.mask = torch.as_tensor(1.0 if mask is None else np.asarray(mask, np.float64))
        model.classifier[2] = fixed
    model.train()
    optimizer = MomentumSGD(model.parameters(), lr=task.learning_rate, momentum=task.momentum)
    parameter_names = [name for name, parameter in model.named_parameters() if parameter.requires_grad]
    positions = [names.index(name) for name in parameter_names]
    if velocities is not None:
        for slot, position in enumerate(positions):
            optimizer._velocities[slot].copy_(torch.as_tensor(velocities[position]))
    inputs = torch.as_tensor(x).permute(0, 3, 1, 2).contiguous().to(torch.float64)
    targets = torch.as_tensor(np.asarray(y, np.int64))
    kinks = Kinks()
    with _kink_recorder(kinks, flips):
        loss = torch.nn.functional.cross_entropy(model(inputs), targets)
        objective = loss
        if proximal_mu:
            assert anchor is not None
            pulls = [((parameter - torch.as_tensor(np.asarray(anchor[position], np.float64))) ** 2).sum()
                     for parameter, position in zip(model.parameters(), positions, strict=True)]
            objective = loss + proximal_mu / 2 * torch.stack(pulls).sum()
        objective.backward()
    optimizer.step()
    after = {name: tensor.detach().clone().numpy() for name, tensor in model.state_dict().items()}
    new_velocities = [np.zeros(0)] * len(names)
    for slot, position in enumerate(positions):
        new_velocities[position] = optimizer._velocities[slot].detach().numpy().copy()
    return Step([after[name] for name in names], new_velocities, loss.item(), kinks)


def reference_logits(task: Task, weights: list[np.ndarray], x: np.ndarray) -> np.ndarray:
    """Evaluation-mode logits of ``task``'s torch model in float64 (``x``: normalised NHWC)."""
    import torch

    from edgefld.backends.torch_models import build_model, weight_names

    model = build_model(task).to(torch.float64)
    model.load_state_dict(dict(zip(weight_names(task), (torch.as_tensor(np.asarray(w, np.float64))
                                                        for w in weights), strict=True)), strict=True)
    model.eval()
    with torch.no_grad():
        return model(torch.as_tensor(x).permute(0, 3, 1, 2).contiguous().to(torch.float64)).numpy()


def free_running(task: Task, weights: list[np.ndarray], x, y, masks, proximal_mu: float = 0.0) -> list[Step]:
    """The float64 trajectory from ``weights``, momentum carried from step to step (``x``, ``y``: one batch
    for every step, or a list with one per step). Compare free-running trajectories only where every step's
    kink margin is above KINK_MARGIN (see the module docstring)."""
    steps: list[Step] = []
    velocities = None
    current = weights
    for k, mask in enumerate(masks):
        step = reference_step(task, current, velocities, _batch(x, k), _batch(y, k), mask,
                              proximal_mu=proximal_mu, anchor=weights)
        steps.append(step)
        current, velocities = step.weights, step.velocities
    return steps


def _velocities(task: Task, start, trajectory, k: int, momentum_carried: bool) -> list[np.ndarray] | None:
    """The momentum buffers of ``trajectory``'s state after step k - 1 (None: fresh).

    Recovered from the last two weights: p_k = p_{k-1} - lr * v_k, so v_k = (p_{k-1} - p_k) / lr, exact to
    within a rounding of the weights divided by lr; the next step multiplies that error back by lr (and
    momentum), so the reference stays within a rounding of the weights."""
    if k == 0 or not momentum_carried:
        return None
    earlier = start if k == 1 else trajectory[k - 2]
    before = trajectory[k - 1]
    return [(np.asarray(a, np.float64) - np.asarray(b, np.float64)) / task.learning_rate if moved else np.zeros(0)
            for a, b, moved in zip(earlier, before, trainable(task), strict=True)]


def lockstep(task: Task, start: list[np.ndarray], trajectory: list[list[np.ndarray]], x, y, masks,
             momentum_carried: bool = True) -> list[Step]:
    """Per step k, the float64 step from ``trajectory``'s state after step k - 1 (``start`` before step 1),
    its momentum carried from the step before (or fresh at every step: steps made by separate train calls).
    ``x``, ``y``: one batch for every step, or a list with one per step."""
    steps = []
    for k, mask in enumerate(masks):
        before = start if k == 0 else trajectory[k - 1]
        velocities = _velocities(task, start, trajectory, k, momentum_carried)
        steps.append(reference_step(task, before, velocities, _batch(x, k), _batch(y, k), mask))
    return steps


def _batch(data, k: int):
    return data[k] if isinstance(data, list) else data


def largest_difference(task: Task, got: list[np.ndarray], expected: list[np.ndarray]) -> tuple[float, str]:
    """The largest absolute difference over all arrays, and the array it is in."""
    return max(
        (float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max()), spec.name)
        for a, b, spec in zip(got, expected, model_layout(task.model), strict=True)
    )


@dataclass
class StepComparison:
    """One step of an implementation against the float64 step from the same state."""

    step: int  # from 1
    difference: float  # largest absolute difference of any weight
    where: str  # the array it is in
    kinks: Kinks  # the float64 step's kinks
    flips: tuple[tuple[int, int], ...] = ()  # near-kink elements whose other branch explains the difference
    difference_with_flips: float | None = None  # what remains once they take it

    @property
    def unexplained(self) -> float:
        """The difference that neither rounding nor a near-kink element's branch accounts for."""
        return self.difference if self.difference_with_flips is None else self.difference_with_flips

    def __str__(self) -> str:
        text = f"step {self.step}: {self.difference:.2g} ({self.where}); kink margin {self.kinks}"
        if self.flips:
            text += (f"; with {len(self.flips)} near-kink element(s) on the other branch "
                     f"{self.difference_with_flips:.2g}")
        return text


def _distance_with_flips(task: Task, before: list[np.ndarray], velocities: list[np.ndarray] | None,
                         x: np.ndarray, y: np.ndarray, mask: np.ndarray | None, got: list[np.ndarray],
                         flips: frozenset[tuple[int, int]]) -> float:
    """How far ``got`` is from the float64 step from ``before`` with ``flips`` sent to their other branch."""
    step = reference_step(task, before, velocities, x, y, mask, flips)
    return largest_difference(task, got, step.weights)[0]


def compare_lockstep(task: Task, start: list[np.ndarray], trajectory: list[list[np.ndarray]], x, y, masks,
                     tolerance: float, *, momentum_carried: bool = True, max_flips: int = 3,
                     candidates: int = 12) -> list[StepComparison]:
    """Each step of ``trajectory`` against the float64 step from the same state (``lockstep``).

    A step further than ``tolerance`` from its reference, where the reference has activations within
    KINK_MARGIN of a kink, is searched for the branch choices that explain it: greedily, up to
    ``max_flips`` of the ``candidates`` nearest elements are sent to their other branch, each time the one
    that brings the reference closest, until the difference is within ``tolerance``. A wrong gradient
    term, a transposed weight or a missing update moves whole arrays and is explained by no such choice.
    """
    references = lockstep(task, start, trajectory, x, y, masks, momentum_carried)
    results = []
    for k, (got, reference) in enumerate(zip(trajectory, references, strict=True)):
        difference, where = largest_difference(task, got, reference.weights)
        comparison = StepComparison(k + 1, difference, where, reference.kinks)
        if difference > tolerance and reference.kinks.near:
            before = start if k == 0 else trajectory[k - 1]
            velocities = _velocities(task, start, trajectory, k, momentum_carried)

            distance_with = functools.partial(_distance_with_flips, task, before, velocities, _batch(x, k),
                                              _batch(y, k), masks[k], got)
            pool = [(call, flat) for _, call, flat in sorted(reference.kinks.near)[:candidates]]
            flips: frozenset[tuple[int, int]] = frozenset()
            best = difference
            for _ in range(max_flips):
                trials = [(distance_with(flips | {element}), element) for element in pool if element not in flips]
                if not trials:
                    break
                value, element = min(trials)
                if value >= best:
                    break
                flips, best = flips | {element}, value
                if best <= tolerance:
                    break
            if flips:
                comparison.flips, comparison.difference_with_flips = tuple(sorted(flips)), best
        results.append(comparison)
    return results


# --- cases --------------------------------------------------------------------------------------------------


def learnable_batch(task: Task, per_class: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Images in the task's stored layout whose class is a fixed pixel pattern plus a little noise."""
    rng = np.random.default_rng(seed)
    pixel_max = int(task.pixel_max)
    templates = rng.integers(0, pixel_max + 1, size=(task.num_classes, *task.input_shape))
    labels = np.repeat(np.arange(task.num_classes), per_class)
    noise = rng.integers(-pixel_max // 8, pixel_max // 8 + 1, size=(len(labels), *task.input_shape))
    images = np.clip(templates[labels] + noise, 0, pixel_max).astype(np.uint8)
    order = rng.permutation(len(labels))
    return images[order], labels[order].astype(np.uint8)


def perturbed_weights(task: Task, seed: int = 1) -> list[np.ndarray]:
    """Initial weights with BatchNorm's four arrays away from 1/0/0/1, so that evaluation mode's use of
    the running statistics and the affine parameters is actually exercised."""
    rng = np.random.default_rng(seed)
    weights = litert_backend.initial_weights(task, seed)
    for index, spec in enumerate(model_layout(task.model)):
        if spec.name.endswith("running_var"):
            weights[index] = rng.uniform(0.5, 2.0, spec.shape).astype(np.float32)
        elif spec.name.endswith("running_mean") or (len(spec.shape) == 1 and spec.name.endswith("bias")):
            weights[index] = (weights[index] + rng.normal(0, 0.1, spec.shape)).astype(np.float32)
        elif len(spec.shape) == 1:  # BatchNorm gamma
            weights[index] = rng.uniform(0.5, 1.5, spec.shape).astype(np.float32)
    return weights


def make_case(task: Task, weights: list[np.ndarray], images: np.ndarray, labels: np.ndarray, *, steps: int,
              mask_seed: int = 5) -> dict[str, np.ndarray]:
    """What tests/backends/litert_steps.py runs: ``steps`` steps on one batch, the dropout masks drawn as the
    LiteRT backend draws them (keep with probability 1 - p, scaled by 1 / (1 - p))."""
    x, y = litert_backend.model_inputs(task, images), labels.astype(np.int32)
    features = litert_backend.manifest()["models"][task.model].get("dropout_features") or 0
    rng = np.random.default_rng(mask_seed)
    keep = np.float32(1.0 - litert_backend.DROPOUT_PROBABILITY)
    masks = np.stack([(rng.random((len(x), features)) < keep).astype(np.float32) / keep for _ in range(steps)])
    return {"task": np.asarray(task.name), "x": x, "y": y, "masks": masks,
            **{litert_backend.weight_key(i): w for i, w in enumerate(weights)}}


def case_weights(case: dict[str, np.ndarray]) -> list[np.ndarray]:
    return [case[key] for key in sorted(key for key in case if key.startswith("w") and key[1:].isdigit())]


def case_masks(case: dict[str, np.ndarray]) -> list[np.ndarray | None]:
    return [mask if mask.size else None for mask in case["masks"]]


def trajectory_of(out: dict[str, np.ndarray], steps: int) -> list[list[np.ndarray]]:
    """litert_steps' output as one weight list per step."""
    count = len([key for key in out if key.startswith("s0_w")])
    return [[out[f"s{step}_w{index:03d}"] for index in range(count)] for step in range(steps)]
