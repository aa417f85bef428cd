"""The fine-tuning methods: one ``MethodSpec`` per method, the single table everything else reads.

Training (CLI choices, model preparation, what a run directory holds), merge (its strategy), the workflow
(run names, which runs have a t value), the report (variant labels) and the config schema (its method
enums and per-method keys are filled from this table when ``snrtune.workflow.schema.load_schema`` reads it)
all look a method up here. Adding a method is one ``MethodSpec`` in BUILTIN plus its prepare function.
The controls are derived, not listed: every method that trains an SNR selection (spectrum, laser-qlora) gets one
control per other criterion of snrtune.criteria, ``METHOD-CRITERION`` (spectrum-random, laser-qlora-kappa, …),
the same method on that criterion's selection, compared with it at equal parameters.

This module stays light (no torch, no transformers): Snakemake imports it through
``snrtune.workflow.config`` while it parses the Snakefile. A prepare function is therefore named by a
``"module:function"`` string and imported only when a model is prepared; a test may pass a callable.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Mapping

from snrtune import criteria
from snrtune import entries
from snrtune.errors import SnrtuneError

MERGE_STRATEGIES = ("adapter", "spectrum-delta", "full-copy")


@dataclass(frozen=True)
class MethodSpec:
    """What snrtune needs to know about one fine-tuning method.

    name:             as on the command line, in the config's ``methods`` and in run ids.
    selection_kind:   None (the method trains without a selection), or the criterion of its selection
                      (snrtune.criteria): "snr" (a sel.yaml from `snrtune select`: the run has a t value), or a
                      control's, e.g. "random" (`select --criterion random --seed S`: as many modules per type
                      as the SNR selection, chosen at random with the run's seed), "kappa", "lowest-snr", ….
    four_bit:         the base model is loaded in NF4 4-bit (QLoRA-style).
    is_adapter:       the run directory holds a PEFT adapter rather than weights of the model itself.
    merge:            how `snrtune merge` makes a full model of a run: "adapter" (merge_and_unload into the
                      full-precision base), "spectrum-delta" (the trained tensors, saved as
                      spectrum_delta.safetensors, overlaid on the base) or "full-copy" (the run is the model).
    label:            the method's name in the report's tables and plots.
    prepare:          ``"module:function"`` (or a callable): ``f(model, settings, selection, match_params_of)``
                      returns (model ready to train, facts for metrics.json); see snrtune.training.methods.
    matches_params_of: the methods whose trainable-parameter count this one can match by choosing its LoRA rank
                      (``--match-params-of NAME``, ``train.laser_qlora_match_params_of``): each is LoRA on every
                      linear layer at ``lora_r``, so the rank that trains as many parameters on the selection
                      follows from the shapes alone.
    train_overrides:  training settings this method changes from src/snrtune/data/train_defaults.yaml
                      (a user's --config still overrides them).
    mirrors:          for a control (a selection_kind other than snr): the SNR-selection method it is compared with
                      at equal parameters; it trains with that method's settings (the workflow's method_settings
                      and learning-rate candidates of ``mirrors`` apply to it unless it has its own).
    reference:        the report compares every other method with this one (``reference()``); exactly one
                      registered method is the reference.
    """

    name: str
    selection_kind: str | None
    four_bit: bool
    is_adapter: bool
    merge: str
    label: str
    prepare: str | Callable
    matches_params_of: tuple[str, ...] = ()
    train_overrides: Mapping[str, Any] = field(default_factory=dict)
    mirrors: str | None = None
    reference: bool = False

    def __post_init__(self):
        if self.merge not in MERGE_STRATEGIES:
            raise ValueError(f"method {self.name!r}: merge {self.merge!r} is not one of {', '.join(MERGE_STRATEGIES)}")
        if self.selection_kind is not None and criteria.find(self.selection_kind) is None:
            raise ValueError(f"method {self.name!r}: selection_kind {self.selection_kind!r} is not None or one of "
                             f"{', '.join(criteria.names())}")
        if self.selection_kind is not None:
            object.__setattr__(self, "selection_kind", criteria.canonical(self.selection_kind))
        if (self.mirrors is not None) != (self.selection_kind not in (None, criteria.REFERENCE)):
            raise ValueError(f"method {self.name!r}: a control (selection_kind {', '.join(criteria.controls())}) "
                             "names the method it mirrors, and only a control does")
        if self.is_adapter != (self.merge == "adapter"):
            raise ValueError(f"method {self.name!r}: is_adapter={self.is_adapter} but merge={self.merge!r}")
        object.__setattr__(self, "train_overrides", MappingProxyType(dict(self.train_overrides)))
        object.__setattr__(self, "matches_params_of", tuple(self.matches_params_of))

    @property
    def rank_matching(self) -> bool:
        """The method accepts ``--match-params-of`` (see ``matches_params_of``)."""
        return bool(self.matches_params_of)

    @property
    def needs_selection(self) -> bool:
        """The method trains the modules of a selection file, so its runs have a t value."""
        return self.selection_kind is not None

    def prepare_function(self) -> Callable:
        if callable(self.prepare):
            return self.prepare
        module, _, function = self.prepare.partition(":")
        return getattr(importlib.import_module(module), function)


BUILTIN = (
    MethodSpec("spectrum", selection_kind="snr", four_bit=False, is_adapter=False, merge="spectrum-delta",
               label="spectrum", prepare="snrtune.training.methods:prepare_spectrum"),
    MethodSpec("full", selection_kind=None, four_bit=False, is_adapter=False, merge="full-copy",
               label="full", prepare="snrtune.training.methods:prepare_full", reference=True),
    MethodSpec("lora", selection_kind=None, four_bit=False, is_adapter=True, merge="adapter",
               label="lora", prepare="snrtune.training.methods:prepare_lora"),
    MethodSpec("qlora", selection_kind=None, four_bit=True, is_adapter=True, merge="adapter",
               label="qlora", prepare="snrtune.training.methods:prepare_qlora"),
    MethodSpec("laser-qlora", selection_kind="snr", four_bit=True, is_adapter=True, merge="adapter",
               label="laser-qlora", prepare="snrtune.training.methods:prepare_laser_qlora",
               matches_params_of=("qlora",)),
)

_REGISTRY: dict[str, MethodSpec] = {spec.name: spec for spec in BUILTIN}
_DERIVED: dict[tuple, dict[str, MethodSpec]] = {}


def _controls() -> dict[str, MethodSpec]:
    """The derived controls: for each criterion but snr (table order), for each method training an SNR selection
    (registration order), ``METHOD-CRITERION``: the method itself on that criterion's selection, mirroring it
    (a registered method of that name takes its place)."""
    key = (tuple(map(id, _REGISTRY.values())), criteria.names())
    if key not in _DERIVED:
        _DERIVED.clear()
        derived = {}
        for criterion in criteria.controls():
            for spec in list(_REGISTRY.values()):
                name = f"{spec.name}-{criterion}"
                if spec.selection_kind == criteria.REFERENCE and name not in _REGISTRY:
                    derived[name] = dataclasses.replace(spec, name=name, selection_kind=criterion,
                                                        label=f"{spec.label}-{criterion}", mirrors=spec.name)
        _DERIVED[key] = derived
    return _DERIVED[key]


def _all() -> dict[str, MethodSpec]:
    return {**_REGISTRY, **_controls()}


def names() -> tuple[str, ...]:
    """Every method name: the registered ones in registration order, then the derived controls."""
    return tuple(_all())


def default_methods() -> tuple[str, ...]:
    """The workflow's ``methods`` when the config names none: every registered method but the controls (a
    control is asked for by name: it doubles the cost of the method it mirrors)."""
    return tuple(name for name, spec in _REGISTRY.items() if spec.mirrors is None)


def reference() -> str:
    """The method the report compares every other method with (the one spec with ``reference=True``)."""
    found = [name for name, spec in _REGISTRY.items() if spec.reference]
    if len(found) != 1:
        raise SnrtuneError(f"the method registry marks {len(found)} reference methods ({', '.join(found) or 'none'}); "
                           "expected exactly one")
    return found[0]


def selection_names() -> tuple[str, ...]:
    """The methods whose runs have a selection (and so a t value)."""
    return tuple(name for name, spec in _all().items() if spec.needs_selection)


def control_kinds() -> tuple[str, ...]:
    """The criteria of the controls (``select --criterion KIND --seed S`` makes their selections)."""
    return tuple(dict.fromkeys(spec.selection_kind for spec in _all().values() if spec.mirrors))


def control(method: str, criterion: str) -> MethodSpec | None:
    """The control of ``method`` (an SNR-selection method) by ``criterion``, or None."""
    criterion = criteria.canonical(criterion)
    return next((spec for spec in _all().values() if spec.mirrors == method and spec.selection_kind == criterion),
                None)


def rank_references() -> tuple[str, ...]:
    """Every method some method can match the trainable-parameter count of (``--match-params-of`` choices)."""
    return tuple(dict.fromkeys(ref for spec in _all().values() for ref in spec.matches_params_of))


def get(name: str) -> MethodSpec:
    """The spec of method ``name``; an unknown name is a one-line error listing the known ones."""
    spec = find(name)
    if spec is None:
        raise SnrtuneError(f"method {name!r} is not one of {', '.join(_all())}")
    return spec


def find(name: str) -> MethodSpec | None:
    """The spec of method ``name``, or None (e.g. 'base' in an eval.json)."""
    return _REGISTRY.get(name) or _controls().get(name)


def registered(spec: MethodSpec) -> contextlib.AbstractContextManager[MethodSpec]:
    """``with registered(MethodSpec(...)):`` the method exists inside the block only (a name already registered,
    or derived as a control, is an error). Tests add a method this way; snrtune's own methods are BUILTIN."""
    return entries.temporarily(lambda entry: entries.add(_REGISTRY, entry, "method", taken=_controls()),
                               _REGISTRY.pop, spec)
