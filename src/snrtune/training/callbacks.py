"""The TrainerCallbacks of `snrtune train`: throughput and the attempts ledger, the divergence stop, and the
progress shown on a terminal or in a log file."""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any

import transformers

from snrtune.fileio import read_json, write_json


def interactive() -> bool:
    """A terminal on both streams: only then does a tqdm bar (carriage-return frames) make sense."""
    return sys.stdout.isatty() and sys.stderr.isatty()


class Throughput(transformers.TrainerCallback):
    """Tokens and seconds of this session's training (a resumed run counts only its own part), and the
    accelerator time of every attempt: ``ledger`` (RUN.partial/attempts.json) keeps each attempt's training
    seconds and world size, flushed at every checkpoint, every ``flush_s`` seconds and at the end, so a
    resumed run adds its time to that of the attempts before it (preempted ones included)."""

    def __init__(self, ledger: Path | None = None, is_main: bool = True, flush_s: float = 30.0):
        self.ledger, self.is_main, self.flush_s = ledger, is_main, flush_s
        self.steady = None  # after on_train_end: {steps, seconds, tokens} after the first optimizer step
        self.end = None  # perf_counter at train end: the attempt's seconds stop there
        self.previous = read_json(ledger)["attempts"] if ledger is not None and ledger.is_file() else []

    def on_train_begin(self, args, state, control, **kwargs):
        self.start_step, self.start_tokens = state.global_step, state.num_input_tokens_seen
        self.start = self.flushed = time.perf_counter()
        self.end = None
        self.world_size, self.device = args.world_size, "cuda" if args.device.type == "cuda" else "cpu"
        self.seconds = 0.0
        self.warm = None  # (time, tokens) at the end of this session's first optimizer step
        self.step_ends: list[float] = []  # perf_counter at the end of each optimizer step of this session

    def attempts(self) -> list[dict]:
        end = self.end if self.end is not None else time.perf_counter()  # training time stops at train end
        now = {"seconds": round(end - self.start, 3), "world_size": self.world_size,
               "device": self.device, "start_step": self.start_step}
        return [*self.previous, now]

    def flush(self) -> None:
        self.flushed = time.perf_counter()
        if self.ledger is not None and self.is_main:
            self.ledger.parent.mkdir(parents=True, exist_ok=True)
            write_json(self.ledger, {"attempts": self.attempts()})

    def on_step_end(self, args, state, control, **kwargs):
        self.step_ends.append(time.perf_counter())
        if self.warm is None:
            self.warm = (time.perf_counter(), state.num_input_tokens_seen)
        if time.perf_counter() - self.flushed >= self.flush_s:
            self.flush()

    def on_save(self, args, state, control, **kwargs):
        self.flush()

    def on_train_end(self, args, state, control, **kwargs):
        end = self.end = time.perf_counter()
        self.seconds = end - self.start
        self.tokens = int(state.num_input_tokens_seen - self.start_tokens)
        steady_steps = state.global_step - self.start_step - 1
        self.steady = None if self.warm is None or steady_steps < 1 else {
            "steps": steady_steps, "seconds": round(end - self.warm[0], 3),
            "tokens": int(state.num_input_tokens_seen - self.warm[1])}
        self.flush()

    def step_seconds(self) -> list[float]:
        """Seconds of each optimizer step of this session (the first from the start of training)."""
        starts = [self.start, *self.step_ends[:-1]]
        return [round(end - start, 4) for start, end in zip(starts, self.step_ends)]

    def cost(self) -> dict[str, Any]:
        """gpu_seconds = Σ world size × training seconds over attempts on GPUs (cpu_seconds on CPUs:
        processes × seconds), and this process's peak allocated / reserved accelerator memory."""
        attempts = self.attempts()
        cuda = self.device == "cuda"
        if cuda:
            import torch

            allocated, reserved = int(torch.cuda.max_memory_allocated()), int(torch.cuda.max_memory_reserved())
        else:
            allocated = reserved = None
        return {
            "gpu_seconds": round(sum(a["world_size"] * a["seconds"] for a in attempts if a["device"] == "cuda"), 3),
            "cpu_seconds": round(sum(a["world_size"] * a["seconds"] for a in attempts if a["device"] != "cuda"), 3),
            "train_seconds_total": round(sum(a["seconds"] for a in attempts), 3),
            "attempts": len(attempts),
            "peak_allocated_bytes": allocated, "peak_reserved_bytes": reserved,
        }


def overflowing_parameter(model) -> tuple[str, str] | None:
    """(name, value) of the first trainable parameter that holds a NaN or an infinity (value "nan" or "inf"), or a
    magnitude whose square overflows its dtype (beyond sqrt of its largest finite value, about 1.8e19 in float32 and
    bfloat16: every norm and dot product through it overflows, so the model's outputs are no longer its weights'
    doing; value: that magnitude); else None."""
    import torch

    with torch.no_grad():
        for name, param in model.named_parameters():
            if not param.requires_grad or not param.numel() or not param.dtype.is_floating_point:
                continue
            low, high = torch.aminmax(param.detach())  # no copy of the parameter (a NaN propagates to both)
            largest = max(abs(float(low)), abs(float(high)))
            if not math.isfinite(largest):
                return name, "nan" if bool(torch.isnan(param).any()) else "inf"
            if largest > math.sqrt(torch.finfo(param.dtype).max):
                return name, f"{largest:.3g}"
    return None


class DivergenceStop(transformers.TrainerCallback):
    """Stops training at the first logged non-finite training or validation loss (the Trainer logs every
    ``logging_steps`` steps; its NaN filter is off, see trainer_kwargs), or at the first trainable parameter that
    is non-finite or overflows (``overflowing_parameter``), looked for after every ``logging_steps``-th optimizer
    step and after the last one (an update that overflowed, whatever the gradient clipping, shows there before any
    loss does, or while the loss stays finite: the outputs of an overflowing model are uniform); ``where`` then says the step,
    the key ("loss", "eval_loss" or "parameters", with the ``parameter``) and its value, and the run is written as
    finished with status "diverged"."""

    def __init__(self):
        self.where: dict[str, Any] | None = None

    def on_step_end(self, args, state, control, model=None, **kwargs):
        last = bool(state.max_steps) and state.global_step >= state.max_steps
        if self.where is not None or model is None or (state.global_step % max(1, args.logging_steps) and not last):
            return
        bad = overflowing_parameter(model)
        if bad is not None:
            self.where = {"step": state.global_step, "key": "parameters", "value": bad[1], "parameter": bad[0]}
            control.should_training_stop = True

    def on_log(self, args, state, control, logs=None, **kwargs):
        for key in ("loss", "eval_loss"):
            value = (logs or {}).get(key)
            if isinstance(value, (int, float)) and not math.isfinite(value):
                found_now = self.where is not None and self.where["key"] == "parameters" \
                    and self.where["step"] == state.global_step  # the loss of that step says it first
                if self.where is None or found_now:
                    self.where = {"step": state.global_step, "key": key, "value": str(float(value))}
                control.should_training_stop = True


class QuietProgress(transformers.trainer_callback.ProgressCallback):
    """The Trainer's tqdm bar (on a terminal only) without a printed dict per logging step."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        pass


def progress_line(step: int, max_steps: int, logs: dict, tokens_per_s: float | None, eta_s: float | None) -> str:
    """``step 3/6 | loss 2.0391 | lr 1.00e-02 | 812 tokens/s | ETA 0:00:04`` (eval: ``eval_loss``)."""
    import datetime

    parts = [f"step {step}/{max_steps}"]
    for key in ("loss", "eval_loss"):
        if key in logs:
            parts.append(f"{key} {logs[key]:.4f}")
    if "learning_rate" in logs:
        parts.append(f"lr {logs['learning_rate']:.2e}")
    if tokens_per_s is not None:
        parts.append(f"{tokens_per_s:.0f} tokens/s")
    if eta_s is not None:
        parts.append(f"ETA {datetime.timedelta(seconds=round(eta_s))}")
    return " | ".join(parts)


class ProgressLines(transformers.TrainerCallback):
    """One plain, flushed line per logging step on the main process: what a SLURM log shows while training."""

    def on_train_begin(self, args, state, control, **kwargs):
        self.start, self.start_step = time.perf_counter(), state.global_step
        self.last_time, self.last_tokens = self.start, state.num_input_tokens_seen

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs or not ({"loss", "eval_loss"} & set(logs)):
            return
        now = time.perf_counter()
        tokens = state.num_input_tokens_seen - self.last_tokens
        rate = tokens / (now - self.last_time) if tokens and now > self.last_time else None
        done = state.global_step - self.start_step
        eta = (now - self.start) / done * (state.max_steps - state.global_step) if done else None
        if "loss" in logs:
            self.last_time, self.last_tokens = now, state.num_input_tokens_seen
        line = progress_line(state.global_step, state.max_steps, logs, rate if "loss" in logs else None, eta)
        if interactive():
            from tqdm.auto import tqdm

            tqdm.write(line)
        else:
            print(line, flush=True)
