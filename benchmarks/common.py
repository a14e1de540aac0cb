"""What every figure shares: result rows, side-by-side timing, the models and the prompts.

Timing rule: the two (or more) sides of a ratio run in the same process, one
after the other, in alternating order, several rounds; the figure is the
median over rounds of the per-round ratio. A slow phase of a noisy machine
then hits both sides of the same round instead of one side only. Where a
ratio must resolve a few percent (figure 2), the sides take turns at every
decoding step instead (``alternate_steps``).
"""

from __future__ import annotations

import copy
import gc
import math
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

import torch

REPO = Path(__file__).resolve().parent.parent
EMBEDDED = "embedded"
GPT2 = "gpt2-small shape (random)"


@dataclass
class Row:
    """One line of the table: a ratio, what it was measured on, and its goal (None: informational)."""

    figure: str
    line: str
    model: str
    setup: str  # device and precision
    batch: int | str
    tokens: int | str
    value: float | None
    goal: float | None = None
    note: str = ""
    skipped: bool = False

    @property
    def status(self) -> str:
        if self.skipped:
            return "skipped"
        if self.goal is None:
            return "info"
        if self.value is None:
            return "MISSED"
        return "met" if self.value >= self.goal else "MISSED"

    @property
    def missed(self) -> bool:
        return self.status == "MISSED"


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def spread(values: list[float]) -> str:
    """The range of the per-round values; flagged when the rounds disagree by more than 30%."""
    if not values:
        return ""
    low, high = min(values), max(values)
    flag = " UNSTABLE (machine busy?)" if low > 0 and high / low > 1.3 else ""
    return f"{low:.3f}-{high:.3f}{flag}"


@dataclass
class Alternation:
    """Seconds per side per round, from :func:`alternate`."""

    times: dict[str, list[float]] = field(default_factory=dict)

    def ratio(self, numerator: str, denominator: str) -> list[float]:
        """Per-round ratio of seconds (numerator / denominator): a speed-up of ``denominator``."""
        return [a / b for a, b in zip(self.times[numerator], self.times[denominator], strict=True)]

    def best(self, name: str) -> float:
        return min(self.times[name])


def alternate(sides: dict[str, Callable[[], float]], rounds: int) -> Alternation:
    """Run every side once per round, each call returning its seconds; the order is rotated by one place per
    round and reversed in every other cycle of rotations (two sides: AB BA BA AB), so each side takes each
    position equally often and follows each other side equally often over every two cycles."""
    names = list(sides)
    result = Alternation({name: [] for name in names})
    for order in round_order(names, rounds):
        for name in order:
            result.times[name].append(sides[name]())
    return result


def round_order(names: list[str], rounds: int) -> list[list[str]]:
    """The order of the sides in each round of :func:`alternate`."""
    return [turn_order(names, r) for r in range(rounds)]


def turn_order(names: list[str], turn: int) -> list[str]:
    """The order of the sides in turn ``turn``: rotated by ``turn`` places, reversed in every other cycle."""
    count = len(names)
    shift = turn % count
    order = names[shift:] + names[:shift]
    return order[::-1] if (turn // count) % 2 else order


class Stepper(Protocol):
    """One round of one side of :func:`alternate_steps`, run a step at a time."""

    @property
    def done(self) -> bool: ...

    def step(self) -> None: ...


def alternate_steps(
    sides: dict[str, Callable[[], Stepper]], rounds: int, device: torch.device | str | None = None
) -> Alternation:
    """Like :func:`alternate`, with the sides taking turns at every step instead of every round.

    Each round starts every side afresh (``sides[name]()``, untimed), then times one step of each side in
    turn, the order of the turns as :func:`alternate`'s rounds (two sides: AB BA BA AB), until every side is
    done; a side's seconds for the round are the sum of its steps. A change of the machine's speed slower than
    a step then falls on both sides alike, where whole alternating decodes leave it a decode apart.
    """
    names = list(sides)
    result = Alternation({name: [] for name in names})
    turn = 0
    for _ in range(rounds):
        steppers = {name: sides[name]() for name in names}
        seconds = dict.fromkeys(names, 0.0)
        while not all(stepper.done for stepper in steppers.values()):
            for name in turn_order(names, turn):
                stepper = steppers[name]
                if stepper.done:
                    continue
                sync(device)
                start = time.perf_counter()
                stepper.step()
                sync(device)
                seconds[name] += time.perf_counter() - start
            turn += 1
        for name in names:
            result.times[name].append(seconds[name])
    return result


def timed(fn: Callable[[], Any], device: torch.device | None = None) -> Callable[[], float]:
    """A side for :func:`alternate`: the wall-clock seconds of ``fn()`` (CUDA synchronised).

    The side keeps what ``fn`` returned last in its ``output`` attribute.
    """

    def run() -> float:
        sync(device)
        start = time.perf_counter()
        run.output = fn()
        sync(device)
        return time.perf_counter() - start

    run.output = None
    return run


def sync(device: torch.device | str | None) -> None:
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def release() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ----------------------------------------------------------------- machine
def busy_cores(interval_s: float = 1.0) -> float:
    """Cores kept busy by other processes, from /proc/stat over ``interval_s`` while this one sleeps."""

    def snapshot() -> tuple[float, float]:
        with open("/proc/stat") as stat:
            fields = [float(x) for x in stat.readline().split()[1:9]]
        return sum(fields), fields[3] + fields[4]  # all, idle + iowait

    try:
        time.sleep(0.2)  # let this process's own worker threads go idle
        total0, idle0 = snapshot()
        time.sleep(interval_s)
        total1, idle1 = snapshot()
    except (OSError, ValueError, IndexError):
        return 0.0
    total = total1 - total0
    return (os.cpu_count() or 1) * (1 - (idle1 - idle0) / total) if total > 0 else 0.0


@dataclass
class ThreadPolicy:
    """Torch threads per figure: fixed, or one per core that other processes leave free.

    Two threads on two cores next to another busy process make every parallel op wait
    for a descheduled thread: decoding then runs up to 10x slower in bursts and no
    median of a few rounds is stable. So, unless told otherwise, a figure runs with
    every core only when the machine looks quiet: other processes kept less than a
    quarter of a core busy in the last 2 s, and the 1-minute load average, less what
    this process itself put there, is below 0.5.
    """

    fixed: int | None = None
    history: list[tuple[float, float, int]] = field(default_factory=list)  # (start, end, threads)

    def own_load(self, now: float) -> float:
        """This process's share of the 1-minute load average (an exponential average, 60 s)."""
        return sum(
            threads * (math.exp(-(now - end) / 60) - math.exp(-(now - start) / 60))
            for start, end, threads in self.history
        )

    def choose(self) -> tuple[int, str]:
        if self.fixed:
            torch.set_num_threads(self.fixed)
            return self.fixed, "as requested"
        cores = os.cpu_count() or 1
        busy = busy_cores(2.0)
        others = os.getloadavg()[0] - self.own_load(time.time()) if hasattr(os, "getloadavg") else 0.0
        quiet = busy < 0.25 and others < 0.5
        threads = cores if quiet else max(1, cores - max(1, int(busy + 0.5)))
        torch.set_num_threads(threads)
        return threads, (
            f"others busy {busy:.1f} cores now, load {max(others, 0.0):.1f} "
            f"in the last minute: {'quiet' if quiet else 'busy'}"
        )

    def record(self, start: float, end: float, threads: int) -> None:
        self.history.append((start, end, threads))


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_lines() -> list[str]:
    import transformers

    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    lines = [
        f"machine: {cpu_model()}, {os.cpu_count()} logical cores, torch threads {torch.get_num_threads()}",
        f"software: python {platform.python_version()}, torch {torch.__version__}, "
        f"transformers {transformers.__version__}",
        f"load average at start (1/5/15 min): {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
    ]
    if torch.cuda.is_available():
        lines.append(f"cuda: {torch.cuda.get_device_name(0)}")
    return lines


def memory_read_bandwidth(gib: float = 1.0, repeats: int = 5, device: torch.device | str = "cpu") -> float:
    """Best-of-``repeats`` read bandwidth (bytes/s) of a sum over a ``gib`` GiB float32 tensor."""
    data = torch.ones(int(gib * 2**30) // 4, dtype=torch.float32, device=device)
    data.sum()  # first touch
    best = 0.0
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        data.sum()
        sync(device)
        best = max(best, data.numel() * 4 / (time.perf_counter() - start))
    del data
    release()
    return best


# ----------------------------------------------------------------- models
def prompts(count: int) -> list[str]:
    from lightning_modules.data import read_prompts

    found = read_prompts(None, None)
    return [found[i % len(found)] for i in range(count)]


class Models:
    """Models loaded at most once per run and shared by the figures."""

    def __init__(self, device: torch.device | str = "cpu", precision: str = "float32") -> None:
        from lightning_modules.store import ModelStore

        self.device = torch.device(device)
        self.precision = precision
        self.store = ModelStore()

    @cached_property
    def embedded(self):
        """The harness's own base model: loaded through the model store, gates attached (all 1)."""
        return self.store.base(EMBEDDED, self.precision, self.device)

    @property
    def tokenizer(self):
        return self.embedded.tokenizer

    @cached_property
    def embedded_plain(self) -> torch.nn.Module:
        """A second, untouched copy: stock sdpa attention, no hooks, as ``from_pretrained`` gives it."""
        from lightning_modules.models.sources import load_model, resolve_source
        from lightning_modules.store import DTYPES

        model, _ = load_model(resolve_source(EMBEDDED), dtype=DTYPES[self.precision])
        return model.to(self.device)

    @cached_property
    def gpt2_plain(self) -> torch.nn.Module:
        """GPT-2 small's shape (12 layers, 12 heads, 768 wide) with random weights: no hub needed."""
        from transformers import GPT2Config, GPT2LMHeadModel

        from lightning_modules.store import DTYPES

        torch.manual_seed(0)
        model = GPT2LMHeadModel(GPT2Config()).to(self.device, DTYPES[self.precision]).eval()
        model.set_attn_implementation("sdpa")
        return model

    @cached_property
    def gpt2(self):
        """A copy of :attr:`gpt2_plain` prepared as ``ModelStore.base`` prepares a model: (model, gates)."""
        return self.gpt2_copy()

    def gpt2_copy(self):
        """A new copy of :attr:`gpt2_plain` prepared as ``ModelStore.base`` prepares a model: (model, gates)."""
        from lightning_modules.heads.gates import attach_gates
        from lightning_modules.models.vocab_head import slice_vocabulary_head

        model = slice_vocabulary_head(copy.deepcopy(self.gpt2_plain))
        return model, attach_gates(model)

    def embedded_ranking(self) -> list[tuple[int, int]]:
        """The entropy ranking exactly as ``build_condition`` computes and caches it (shared store)."""
        from lightning_modules.condition import ConditionSpec, build_condition
        from lightning_modules.heads.agency import AgencyConfig
        from lightning_modules.heads.calibration import CalibrationConfig
        from lightning_modules.heads.pruning import PruningConfig

        spec = ConditionSpec(
            EMBEDDED, self.precision, PruningConfig(level=0), AgencyConfig(), CalibrationConfig(), 0, 1
        )
        condition = build_condition(self.store, spec, self.device)
        return condition.scores.order()  # built, never attached: nothing to detach

    def embedded_batch(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``batch`` bundled prompts, left-padded as the harness pads them."""
        enc = self.tokenizer(prompts(batch), return_tensors="pt", padding=True)
        return enc.input_ids.to(self.device), enc.attention_mask.to(self.device)

    def decoding_pair(self, which: str) -> tuple[torch.nn.Module, torch.nn.Module, Any]:
        """(plain model, gated model, gates) of ``which``: the embedded default or ``gpt2`` (random shape)."""
        if which == EMBEDDED:
            return self.embedded_plain, self.embedded.model, self.embedded.gates
        model, gates = self.gpt2
        return self.gpt2_plain, model, gates

    def batch_for(self, which: str, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts for ``which``: the bundled ones, or random tokens of the same padded length for gpt2."""
        if which == EMBEDDED:
            return self.embedded_batch(batch)
        width = self.embedded_batch(batch)[0].shape[1]
        return self.random_batch(batch, width, self.gpt2_plain.config.vocab_size)

    def pad_token_id(self, which: str) -> int:
        return self.tokenizer.pad_token_id if which == EMBEDDED else 0

    def random_batch(self, batch: int, length: int, vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
        generator = torch.Generator().manual_seed(batch * 1000 + length)
        ids = torch.randint(0, vocab, (batch, length), generator=generator)
        return ids.to(self.device), torch.ones_like(ids)


def parameter_bytes(model: torch.nn.Module) -> int:
    """Bytes of the weights one decoding step reads: every parameter once (a tied matrix once)."""
    return sum(p.numel() * p.element_size() for p in model.parameters())  # parameters() dedups ties
