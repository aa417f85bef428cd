"""Layer-selection criteria: one ``Criterion`` per way of choosing which modules to train, the single table that
scan, select, the method registry's controls, the workflow, run names and the report read (docs/criteria.md).

A criterion scores every module; `snrtune select --criterion NAME` keeps, per module type, as many modules as
the SNR selection at the same t (so the same parameter count in a dense transformer), those at the end of the
ranking its ``direction`` names. Its score is either a function of the matrix's singular values (``takes=
"spectrum"``: `snrtune scan` computes it in the same pass as the SNR and writes it into snr.json under the
criterion's name) or of the module's place and the run's seed (``takes="module"``: nothing to scan). A criterion
may instead rank by another one's score (``ranks_by``: lowest-snr is the SNR read from the other end).

Adding a criterion is one ``Criterion`` in BUILTIN (a test: ``registered``): every non-SNR criterion gets the controls
``spectrum-NAME`` and ``laser-qlora-NAME`` in snrtune.method_registry, ``select --criterion NAME`` and the
workflow's ``selection.criteria`` accept it, the report compares it with SNR.

Light (no torch): Snakemake imports it through snrtune.method_registry while it parses the Snakefile. A spectral
score (and its error estimate) is therefore named by a ``"module:function"`` string, imported only when a scan
computes it; a test may pass a callable.
"""

from __future__ import annotations

import contextlib
import importlib
import math
import random
import re
from dataclasses import dataclass
from typing import Callable

from snrtune import entries
from snrtune.errors import SnrtuneError

DIRECTIONS = ("highest", "lowest")
TAKES = ("spectrum", "module")
NAME = re.compile(r"^[a-z]+(-[a-z]+)*$")  # run names (spectrum-NAME-t25-s0) and file names carry it
# keys of a scanned module in snr.json that a spectral criterion's score may not take
RESERVED_KEYS = frozenset({"name", "param", "type", "layer", "expert", "shape", "n_params", "s_max", "signal",
                           "noise", "threshold", "computed_in", "status", "tied_to"})
LEGACY_NAMES = {"lowest": "lowest-snr"}  # a selection file's `selection: lowest` from snrtune before the table


@dataclass(frozen=True)
class Criterion:
    """One way of choosing the modules to train.

    name:      as in `select --criterion`, the workflow's ``selection.criteria``, a selection file's
               ``selection``, the control methods' names (``spectrum-NAME``) and, for a spectral score, the key
               of its value in snr.json's modules.
    score:     ``takes="spectrum"``: ``f(singular, n, m)`` → a score per matrix, from a batch (..., k) of
               singular values (float64, descending) of n×m matrices; ``takes="module"``: ``f(module, seed)`` →
               float, from an snr.json module entry (its ``layer``, ``expert``, ``name``) and the run's seed.
               A ``"module:function"`` string or a callable; None when ``ranks_by`` names the score.
    takes:     "spectrum" or "module" (what ``score`` is a function of).
    direction: "highest" or "lowest": which end of the ranking is selected.
    label:     the criterion's name in the report.
    source:    the published source of the criterion (shown in docs/criteria.md and the report).
    error:     spectral only: ``f(singular, n, m, eps)`` → the estimated relative error of the score when each
               eigenvalue of the Gram matrix carries rounding of relative size ``eps`` (snrtune.spectrum.snr's
               error model); the scan redoes a matrix in float64 (then by a float64 SVD) while it exceeds 1e-4.
               None: the score is always computed from float64 singular values.
    ranks_by:  the criterion whose score this one ranks (lowest-snr: snr); None for its own score.
    seeded:    the score depends on the run's seed (random), so each seed selects differently.
    """

    name: str
    score: str | Callable | None
    takes: str
    direction: str
    label: str
    source: str
    error: str | Callable | None = None
    ranks_by: str | None = None
    seeded: bool = False

    def __post_init__(self):
        if not NAME.match(self.name):
            raise ValueError(f"criterion {self.name!r}: a name is lowercase words joined by '-' (it is part of run "
                             "and file names)")
        if self.takes not in TAKES:
            raise ValueError(f"criterion {self.name!r}: takes {self.takes!r} is not one of {', '.join(TAKES)}")
        if self.direction not in DIRECTIONS:
            raise ValueError(f"criterion {self.name!r}: direction {self.direction!r} is not one of "
                             f"{', '.join(DIRECTIONS)}")
        if (self.score is None) == (self.ranks_by is None):
            raise ValueError(f"criterion {self.name!r}: give a score function or the criterion it ranks by, not both")
        if self.takes == "spectrum" and self.name in RESERVED_KEYS:
            raise ValueError(f"criterion {self.name!r}: the name is a key of snr.json's modules already")
        if self.error is not None and self.takes != "spectrum":
            raise ValueError(f"criterion {self.name!r}: only a spectral score has an error estimate")

    @property
    def key(self) -> str:
        """The criterion whose score it ranks: its own name, or ``ranks_by``."""
        return self.ranks_by or self.name

    @property
    def spectral(self) -> bool:
        """`snrtune scan` computes its own score (from the singular values)."""
        return self.takes == "spectrum" and self.ranks_by is None

    def function(self, which: str = "score") -> Callable | None:
        """The score (or error) function, imported from its ``"module:function"`` name when given as one."""
        value = getattr(self, which)
        if value is None or callable(value):
            return value
        module, _, name = value.partition(":")
        return getattr(importlib.import_module(module), name)


def position(module: dict, seed: int) -> float:
    """The module's layer index: the last layers first (direction highest), as LLaMA-Factory's freeze mode
    trains the last ``freeze_trainable_layers`` layers (Zheng et al. 2024, "LlamaFactory: Unified Efficient
    Fine-Tuning of 100+ Language Models", ACL demo; ``finetuning_type: freeze``) and most hand-written recipes
    that unfreeze the top of the network do. The seed plays no part."""
    return float(module["layer"]) if module.get("layer") is not None else -math.inf


def random_score(module: dict, seed: int) -> float:
    """A uniform number in [0, 1) drawn per module from the seed and the module's name and expert (Python's
    ``random.Random`` seeded with the text ``"SEED/NAME/EXPERT"``): the modules with the highest draws of a type
    are a uniformly random subset of it, the same for every t with one seed (t=25's within t=50's). The control
    Spectrum's claim was tested against (Hartford et al. 2024, random layer selection at equal parameters)."""
    return random.Random(f"{seed}/{module['name']}/{module.get('expert')}").random()


SPECTRUM = "Hartford, Atkins, Fernandes, Neubauer (2024), Spectrum: Targeted Training on Signal to Noise Ratio, " \
           "arXiv:2406.06623"
BUILTIN = (
    Criterion("snr", "snrtune.spectrum.scores:snr", "spectrum", "highest", "SNR", SPECTRUM,
              error="snrtune.spectrum.scores:snr_error"),
    Criterion("random", random_score, "module", "highest", "random", SPECTRUM + " (its random-selection control)",
              seeded=True),
    Criterion("lowest-snr", None, "spectrum", "lowest", "lowest SNR",
              "the inverse of Spectrum (" + SPECTRUM + "): the modules it would train last", ranks_by="snr"),
    Criterion("kappa", "snrtune.spectrum.scores:kappa", "spectrum", "lowest", "condition number κ",
              "KappaTune: the lowest condition number σ_max/σ_min first (PEFT's KappaTuneSelector, "
              "huggingface/peft pull request 3106, peft/helpers.py)", error="snrtune.spectrum.scores:kappa_error"),
    Criterion("alpha", "snrtune.spectrum.scores:alpha", "spectrum", "highest", "heavy-tail α",
              "Martin & Mahoney (2021), Implicit self-regularization in deep neural networks, JMLR 22(165) "
              "(WeightWatcher's α); Qing et al. (2024), AlphaLoRA, EMNLP: a larger α reads as a less-trained layer",
              error="snrtune.spectrum.scores:alpha_error"),
    Criterion("position", position, "module", "highest", "position (last layers)",
              "LLaMA-Factory's freeze mode (Zheng et al. 2024, ACL demo): the last N layers"),
)

_TABLE: dict[str, Criterion] = {c.name: c for c in BUILTIN}
REFERENCE = "snr"  # the criterion every other one is compared with


def names() -> tuple[str, ...]:
    """Every criterion's name, in table order (snr first)."""
    return tuple(_TABLE)


def controls() -> tuple[str, ...]:
    """Every criterion but the SNR: each has its control methods (spectrum-NAME, laser-qlora-NAME)."""
    return tuple(name for name in _TABLE if name != REFERENCE)


def spectral() -> tuple[Criterion, ...]:
    """The criteria whose own score `snrtune scan` computes from the singular values."""
    return tuple(c for c in _TABLE.values() if c.spectral)


def canonical(name: str) -> str:
    """A criterion name, with the names older snrtune files use mapped to today's (``lowest`` → ``lowest-snr``)."""
    return LEGACY_NAMES.get(name, name)


def get(name: str) -> Criterion:
    """The criterion ``name`` (or an older name of it); an unknown name is a one-line error listing the known ones."""
    try:
        return _TABLE[canonical(name)]
    except KeyError:
        raise SnrtuneError(f"criterion {name!r} is not one of {', '.join(_TABLE)}") from None


def find(name: str | None) -> Criterion | None:
    return _TABLE.get(canonical(name)) if name else None


def _add(criterion: Criterion) -> Criterion:
    if criterion.ranks_by is not None and criterion.ranks_by not in _TABLE:
        raise ValueError(f"criterion {criterion.name!r} ranks by {criterion.ranks_by!r}, which is not registered")
    return entries.add(_TABLE, criterion, "criterion")


def registered(criterion: Criterion) -> contextlib.AbstractContextManager[Criterion]:
    """``with registered(Criterion(...)):`` the criterion exists inside the block only (a name already registered
    is an error; a ``ranks_by`` must name a registered one). Tests add a criterion this way; snrtune's own are
    BUILTIN."""
    return entries.temporarily(_add, _TABLE.pop, criterion)


def score_of(module: dict, criterion: Criterion, seed: int = 0) -> float | None:
    """A module's score under ``criterion``: its spectral score from snr.json (``module[criterion.key]``, None
    when the scan could not compute it) or the module-score function's value; None when not a finite number."""
    if criterion.takes == "module":
        value = criterion.function()(module, seed)
    else:
        value = module.get(criterion.key)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def rank_key(criterion: Criterion, score: float, module: dict) -> tuple:
    """The selection order: the end ``direction`` names first; ties keep layer order (then expert, then name)."""
    layer = module["layer"] if module["layer"] is not None else -1
    return (-score if criterion.direction == "highest" else score, layer, module["expert"] or 0, module["name"])
