"""`snrtune select snr.json --top-percent T --out sel.yaml`: which modules to train.

Per module type, the top floor(n·t/100) modules by SNR (ties keep layer order), or, with a parameter
budget, the highest-SNR modules across types until the budget is met. ``unfrozen_parameters`` are
snrtune's own patterns (Python ``re.match`` on ``named_parameters()`` names, dots escaped; `snrtune train`
applies them); ``exports.axolotl.unfrozen_parameters`` are the same patterns in axolotl's form (dots left
unescaped: axolotl escapes them itself). Every selection states its exact trainable-parameter count.

Other criteria (``--criterion NAME``, snrtune.criteria: random, lowest-snr, kappa, alpha, position, …): per type
the same number of modules as the SNR selection, ranked by that criterion, so the trainable-parameter count
matches the SNR selection's; they answer whether choosing by SNR beats choosing as many modules otherwise.
``--random`` and ``--lowest`` are the older spellings of ``--criterion random`` and ``--criterion lowest-snr``.
"""

from __future__ import annotations

import argparse
import math
import os
import re
from collections import Counter, defaultdict

from snrtune import __version__, criteria
from snrtune.artifact_names import COMPAT_STATS_SUFFIX
from snrtune import arguments
from snrtune.fileio import Owner, atomic_file, mark_line, write_json, write_yaml
from snrtune.errors import SnrtuneError
from snrtune.naming import module_name, t_value
from snrtune.spectrum.selection_file import load_scan
from snrtune.spectrum.snr import module_type


UNRANKED = {"nonfinite": "with non-finite weights", "nonfinite_snr": "with a non-finite SNR (try --precision float64)",
            "empty": "empty", "snr_missing": "without an SNR"}
CONTROL_TOLERANCE = 0.01  # a control's trainable parameters may differ from its SNR selection's by this fraction
INCLUDABLE = {"lm_head": ("lm_head",), "embed_tokens": ("embed_tokens", "wte", "embed_in", "word_embeddings")}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("snr_json", help="output of `snrtune scan`")
    parser.add_argument("--out", required=True, help="selection YAML to write")
    parser.add_argument("--force", action="store_true", help="replace an existing --out file this step did not write")
    arguments.output(parser, "file", inputs=("snr_json",),
                     siblings=lambda args, out: [(f"{out}{COMPAT_STATS_SUFFIX}", "file", COMPAT_STATS_SUFFIX)]
                     if args.compat else [])
    size = parser.add_mutually_exclusive_group(required=True)
    size.add_argument("--top-percent", type=float, help="t: keep the top floor(n*t/100) modules of each type")
    size.add_argument("--budget-params", type=int, help="select the highest-SNR modules until N trainable parameters")
    size.add_argument("--budget-fraction", type=float,
                      help="as --budget-params, as a fraction of the model's parameters (0-1)")
    parser.add_argument("--types", default=None,
                        help="comma-separated module types to select from (default: every per-layer matrix type, "
                             "i.e. the attention and MLP projections)")
    parser.add_argument("--include", default="",
                        help="also train these whole: comma-separated from lm_head, embed_tokens")
    control = parser.add_mutually_exclusive_group()
    control.add_argument("--criterion", default=criteria.REFERENCE, type=criterion_name,
                         help=f"rank modules by this criterion ({', '.join(criteria.names())}; default snr): any "
                              "other than snr takes per type as many modules as the SNR selection (equal trainable "
                              "parameters, docs/criteria.md)")
    control.add_argument("--random", dest="criterion", action="store_const", const="random",
                         help="the same as --criterion random (an older spelling)")
    control.add_argument("--lowest", dest="criterion", action="store_const", const="lowest-snr",
                         help="the same as --criterion lowest-snr (an older spelling)")
    parser.add_argument("--seed", type=arguments.seed, default=0,
                        help="seed of a seeded criterion (random; default 0)")
    parser.add_argument("--compat", choices=["spectrum"], default=None,
                        help="spectrum: write the reference spectrum.py YAML line for line (all types, norms by "
                             "layer order, lm_head and embed_tokens always); the counts go to OUT.stats.json")


def run(args: argparse.Namespace) -> int:
    args.top_percent = t_value(args.top_percent)
    scan = load_scan(args.snr_json)
    types = [t.strip() for t in args.types.split(",") if t.strip()] if args.types is not None else None
    if types == []:
        raise SnrtuneError(f"--types {args.types!r} names no module type; expected e.g. self_attn.q_proj,mlp.up_proj, "
                           f"or leave it out for every per-layer type")
    include = [i.strip() for i in args.include.split(",") if i.strip()]
    criterion = criteria.get(args.criterion)
    if args.compat == "spectrum":
        if criterion.name != criteria.REFERENCE:
            raise SnrtuneError(f"--compat spectrum writes the reference's SNR selection: it takes no --criterion "
                               f"{criterion.name}")
        if args.top_percent is None:
            raise SnrtuneError("--compat spectrum needs --top-percent (the reference has no budget mode)")
        text, stats = spectrum_reference_yaml(scan, args.top_percent)
        owner = Owner("select")
        with atomic_file(args.out, owner=owner, force=args.force) as handle:
            handle.write(mark_line(owner, yaml_comment=True) + text)  # the mark: a comment, as the reference reads it
        write_json(f"{args.out}{COMPAT_STATS_SUFFIX}", stats, owner=owner.sibling(COMPAT_STATS_SUFFIX))
        selection = stats
    else:
        budget = resolve_budget(scan, args.budget_params, args.budget_fraction)
        selection = select(scan, top_percent=args.top_percent, budget_params=budget, types=types, include=include,
                           snr_file=args.snr_json)
        if criterion.name != criteria.REFERENCE:
            selection = criterion_selection(scan, selection, criterion, seed=args.seed)
        write_selection(args.out, selection, force=args.force)
    for note in selection["notes"]:
        print(f"note: {note}")
    print(f"selected {len(selection.get('modules', [])) or len(selection['unfrozen_parameters'])} entries: "
          f"{selection['trainable_params']:,} of {selection['total_params']:,} parameters trainable "
          f"({100 * selection['trainable_fraction']:.2f}%) -> {args.out}")
    return 0


def criterion_name(text: str) -> str:
    """``--criterion``'s value: a registered criterion (or an older name of one), as an argparse type."""
    if criteria.find(text) is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(criteria.names())}")
    return criteria.canonical(text)


def check_top_percent(top_percent: float) -> None:
    """t must be a finite percentage in (0, 100] (NaN fails every comparison, so it fails here too)."""
    if not 0 < top_percent <= 100:
        raise SnrtuneError(f"--top-percent {top_percent} out of range: expected a percentage in (0, 100]")


def rankable(module: dict) -> bool:
    """A module with a finite SNR from a successful scan (status "ok"); others are listed, never ranked."""
    snr = module.get("snr")
    return (module.get("status") == "ok" and isinstance(snr, (int, float)) and not isinstance(snr, bool)
            and math.isfinite(snr))


def unranked_note(modules: list[dict]) -> str | None:
    """One note counting the modules that cannot be ranked, by status, with a few names."""
    bad = [m for m in modules if not rankable(m)]
    if not bad:
        return None
    statuses = Counter(m.get("status") if m.get("status") != "ok" else "snr_missing" for m in bad)
    counts = ", ".join(f"{count} {UNRANKED.get(status, f'with status {status!r}')}"
                       for status, count in sorted(statuses.items()))
    return f"{len(bad)} matrices are not ranked ({counts}): {', '.join(m['name'] for m in bad[:5])}"


def resolve_budget(scan: dict, budget_params: int | None, budget_fraction: float | None) -> int | None:
    if budget_fraction is not None:
        if not 0 < budget_fraction <= 1:
            raise SnrtuneError(f"--budget-fraction {budget_fraction} out of range: expected a fraction in (0, 1]")
        return int(budget_fraction * scan["total_params"])
    if budget_params is not None and budget_params <= 0:
        raise SnrtuneError(f"--budget-params {budget_params} must be a positive number of parameters")
    return budget_params


def default_types(modules: list[dict]) -> list[str]:
    """Types that repeat per layer (attention and MLP projections, experts); not embeddings or lm_head."""
    return sorted({m["type"] for m in modules if m["layer"] is not None})


def rank_key(module: dict) -> tuple:
    """Highest SNR first; ties keep layer order (then expert, then name)."""
    return (-module["snr"], module["layer"] if module["layer"] is not None else -1, module["expert"] or 0,
            module["name"])


def top_per_type(candidates: dict[str, list[dict]], top_percent: float) -> list[dict]:
    chosen = []
    for kind in sorted(candidates):
        members = candidates[kind]
        keep = math.floor(len(members) * top_percent / 100)
        chosen.extend(sorted(members, key=rank_key)[:keep])
    return chosen


def pattern_targets(modules: list[dict], parameters: dict[str, list[int]], tied: dict[str, str]) -> list[tuple[str, str]]:
    """What each selected module unfreezes, once each: ``(name, "prefix")`` for a module's weight and bias
    (``model.layers.3.self_attn.q_proj.``), ``(name, "whole")`` for a fused tensor (e.g. MoE experts) as a whole."""
    targets = []
    for module in modules:
        param = tied.get(module["param"], module["param"])
        if param.endswith(".weight") and param in parameters:
            target = (module_name(param) + ".", "prefix")
        else:
            target = (param, "whole")
        if target not in targets:
            targets.append(target)
    return targets


def render_pattern(target: tuple[str, str], escape=re.escape) -> str:
    text, kind = target
    return "^" + escape(text) + ("$" if kind == "whole" else "")


def axolotl_escape(text: str) -> str:
    r"""Regex-escape every character but the dots: axolotl escapes each dot not followed by ``+`` itself
    (src/axolotl/utils/freeze.py, LayerNamePattern), so an already escaped dot would become ``\\.``: a literal
    backslash, then any character, which matches no parameter name."""
    return "".join(char if char == "." else re.escape(char) for char in text)


def patterns_for(modules: list[dict], parameters: dict[str, list[int]], tied: dict[str, str]) -> list[str]:
    """snrtune's ``unfrozen_parameters`` patterns (Python ``re.match``, dots escaped) for the selected modules."""
    return [render_pattern(target) for target in pattern_targets(modules, parameters, tied)]


def axolotl_patterns(modules: list[dict], parameters: dict[str, list[int]], tied: dict[str, str]) -> list[str]:
    """The same selection in the form axolotl's ``unfrozen_parameters`` takes: dots unescaped."""
    return [render_pattern(target, axolotl_escape) for target in pattern_targets(modules, parameters, tied)]


def matched_parameters(patterns: list[str], parameters: dict[str, list[int]], strict: bool = True) -> dict[str, int]:
    """{parameter name: numel} matched by any pattern; a pattern matching nothing is an error when strict."""
    matched = {}
    for pattern in patterns:
        regex = re.compile(pattern)
        hits = [name for name in parameters if regex.match(name)]
        if not hits and strict:
            raise SnrtuneError(f"selection pattern {pattern!r} matches no parameter of the model")
        for name in hits:
            matched[name] = math.prod(parameters[name])
    return matched


def budget_select(candidates: list[dict], budget: int, parameters: dict, tied: dict) -> list[dict]:
    """Greedy by SNR across types: add a module when it still fits in the budget."""
    chosen: list[dict] = []
    used: dict[str, int] = {}
    for module in sorted(candidates, key=rank_key):
        extra = {name: size for name, size in matched_parameters(patterns_for([module], parameters, tied),
                                                                 parameters).items() if name not in used}
        if sum(used.values()) + sum(extra.values()) <= budget:
            chosen.append(module)
            used.update(extra)
    return chosen


def find_include(modules: list[dict], what: str) -> dict:
    if what not in INCLUDABLE:
        raise SnrtuneError(f"--include {what!r} unknown: expected a comma-separated list from {', '.join(INCLUDABLE)}")
    for module in modules:
        if module["layer"] is None and module["name"].split(".")[-1] in INCLUDABLE[what]:
            return module
    raise SnrtuneError(f"--include {what}: the model has no such matrix")


def select(scan: dict, top_percent: float | None = None, budget_params: int | None = None,
           types: list[str] | None = None, include: list[str] = (), snr_file: str | None = None) -> dict:
    """The selection dict written to sel.yaml (docs/artifacts.md)."""
    if top_percent is not None:
        check_top_percent(top_percent)
    modules, parameters, tied = scan["modules"], scan["parameters"], scan.get("tied", {})
    known = sorted({m["type"] for m in modules})
    types = list(types) if types else default_types(modules)
    for kind in types:
        if kind not in known:
            raise SnrtuneError(f"--types {kind!r} is not a module type of this scan: expected one of {', '.join(known)}")
    notes = []
    note = unranked_note([m for m in modules if m["type"] in types and "tied_to" not in m])
    if note:
        notes.append(note)
    candidates = candidates_by_type(modules, types)
    for kind in types:
        if len(candidates[kind]) == 1:
            notes.append(f"type {kind!r} has a single module: a percentage of one selects it only at t=100")
    if top_percent is not None:
        chosen = top_per_type(candidates, top_percent)
    else:
        chosen = budget_select([m for ms in candidates.values() for m in ms], budget_params, parameters, tied)
    for what in include:
        module = find_include(modules, what)
        if module["param"] in tied:
            notes.append(f"{module['name']} is tied to {tied[module['param']]}: training one trains both")
        if module not in chosen:
            chosen.append(module)
    if not chosen:
        raise SnrtuneError(f"the selection is empty (top_percent={top_percent}, budget={budget_params}): "
                           f"raise --top-percent or the budget")
    if fused_slices(chosen, parameters):
        notes.append("fused 3-D expert tensors are unfrozen whole: selecting one expert slice trains all its experts")
    return selection_record(scan, chosen, notes, top_percent=top_percent, budget_params=budget_params, types=types,
                            snr_file=snr_file)


def fused_slices(modules: list[dict], parameters: dict) -> bool:
    """Some of ``modules`` are expert slices of a fused 3-D tensor (trained whole, all its experts)."""
    return any(m["expert"] is not None and len(parameters.get(m["param"], [])) == 3 for m in modules)


def candidates_by_type(modules: list[dict], types: list[str]) -> dict[str, list[dict]]:
    """The rankable modules of each type: finite SNR, not an alias of a tied matrix."""
    candidates: dict[str, list[dict]] = defaultdict(list)
    for module in modules:
        if module["type"] in types and rankable(module) and "tied_to" not in module:
            candidates[module["type"]].append(module)
    return candidates


def selection_record(scan: dict, chosen: list[dict], notes: list[str], top_percent: float | None,
                     budget_params: int | None, types: list[str], snr_file: str | None,
                     criterion: str = criteria.REFERENCE) -> dict:
    """The sel.yaml dict for the ``chosen`` modules (by ``criterion``): patterns, exact counts, exports."""
    parameters, tied = scan["parameters"], scan.get("tied", {})
    patterns = patterns_for(chosen, parameters, tied)
    trainable = sum(matched_parameters(patterns, parameters).values())
    total = scan["total_params"]
    lora_modules = [module_name(p) for p in dict.fromkeys(tied.get(m["param"], m["param"]) for m in chosen)
                    if p.endswith(".weight") and len(parameters.get(p, [])) == 2]
    return {
        "snrtune_version": __version__,
        "model": scan.get("model"),
        "selection": criterion,
        "snr_file": str(snr_file) if snr_file else None,
        "top_percent": top_percent,
        "budget_params": budget_params,
        "types": types,
        "modules": [{"name": m["name"], "param": m["param"], "type": m["type"], "layer": m["layer"],
                     "expert": m["expert"], "shape": m.get("shape"), "snr": m["snr"]} for m in chosen],
        "unfrozen_parameters": patterns,
        "trainable_params": trainable,
        "total_params": total,
        "trainable_fraction": trainable / total,
        "notes": notes,
        "exports": exports(criterion, axolotl_patterns(chosen, parameters, tied), lora_modules),
    }


def exports(criterion: str, axolotl: list[str], lora_modules: list[str]) -> dict:
    """The selection in other tools' forms, each stating the criterion that chose it (``criterion`` is snrtune's
    note, not a key of the tool's own configuration)."""
    return {
        "axolotl": {"unfrozen_parameters": axolotl, "criterion": criterion},
        "laser_qlora": {"lora_target_modules": lora_modules, "criterion": criterion},
        "llama_factory": {"lora_target": ",".join(short_module_name(name) for name in lora_modules),
                          "criterion": criterion},
        "peft": {"target_modules": lora_modules, "criterion": criterion},
    }


def criterion_selection(scan: dict, reference: dict, criterion: criteria.Criterion | str, seed: int = 0) -> dict:
    """The selection of ``criterion`` mirroring the SNR selection ``reference``: per type as many modules as it
    has, the first in the criterion's ranking (snrtune.criteria.rank_key; ``seed`` for a seeded criterion such as
    random); its included whole matrices (lm_head, embeddings) are kept. Only modules the scan scored (status ok,
    not a tied alias) with a finite score under the criterion are ranked. The trainable-parameter count must match
    the reference's within CONTROL_TOLERANCE (exactly when all modules of a type have one shape); with fused 3-D
    expert tensors, which are trained whole, a notes line states the difference instead."""
    criterion = criteria.get(criterion) if isinstance(criterion, str) else criterion
    types = reference["types"]
    counts = Counter(m["type"] for m in reference["modules"] if m["type"] in types and m["layer"] is not None)
    kept = [m for m in reference["modules"] if not (m["type"] in types and m["layer"] is not None)]
    chosen = []
    for mtype in sorted(counts):
        scored = [(criteria.score_of(m, criterion, seed), m) for m in scan["modules"]
                  if m["type"] == mtype and m.get("status") == "ok" and "tied_to" not in m]
        if criterion.takes == "spectrum" and scored and all(criterion.key not in m for _, m in scored):
            raise SnrtuneError(f"the scan has no {criterion.key!r} scores (made by an older snrtune): run "
                               f"`snrtune scan` again for --criterion {criterion.name}")
        ranked = sorted(((score, m) for score, m in scored if score is not None),
                        key=lambda pair: criteria.rank_key(criterion, *pair))
        if len(ranked) < counts[mtype]:
            raise SnrtuneError(f"--criterion {criterion.name}: type {mtype!r} has {len(ranked)} modules with a "
                               f"{criterion.key} score, fewer than the {counts[mtype]} the SNR selection trains")
        chosen.extend(m for _, m in ranked[:counts[mtype]])
    by_name = {m["name"]: m for m in scan["modules"]}
    chosen += [by_name[m["name"]] for m in kept]
    what = f"{criterion.direction} {criterion.key} first" + (f", seed {seed}" if criterion.seeded else "")
    notes = [f"criterion {criterion.name} ({what}): per type as many modules as the SNR selection "
             f"({', '.join(f'{t} {n}' for t, n in sorted(counts.items()))})"]
    record = selection_record(scan, chosen, notes, top_percent=reference["top_percent"],
                              budget_params=reference["budget_params"], types=types, snr_file=reference["snr_file"],
                              criterion=criterion.name)
    target = reference["trainable_params"]
    if abs(record["trainable_params"] - target) > CONTROL_TOLERANCE * target:
        if not fused_slices(chosen, scan["parameters"]):
            raise SnrtuneError(f"the {criterion.name} selection trains {record['trainable_params']:,} parameters "
                               f"against the SNR selection's {target:,}: more than {CONTROL_TOLERANCE:.0%} apart "
                               "(modules of one type differ in size)")
        record["notes"].append(f"fused 3-D expert tensors are unfrozen whole: it trains "
                               f"{record['trainable_params']:,} parameters against the SNR selection's {target:,} "
                               "(the same number of expert slices per type, in other fused tensors)")
    record["seed"] = seed if criterion.seeded else None
    for module, entry in zip(chosen, record["modules"]):
        entry[criterion.key] = criteria.score_of(module, criterion, seed)
    record["mirrors"] = {"selection": criteria.REFERENCE, "top_percent": reference["top_percent"],
                         "budget_params": reference["budget_params"], "trainable_params": target,
                         "modules": [m["name"] for m in reference["modules"]]}
    return record


def short_module_name(name: str) -> str:
    """LLaMA-Factory style: from the layer container on (model.layers.3.mlp.up_proj → layers.3.mlp.up_proj)."""
    parts = name.split(".")
    first_digit = next((i for i, part in enumerate(parts) if part.isdigit()), None)
    return ".".join(parts[first_digit - 1:]) if first_digit else name


def write_selection(path: str | os.PathLike, selection: dict, force: bool = False) -> None:
    header = (f"# snrtune selection by {selection['selection']}: {selection['trainable_params']:,} of "
              f"{selection['total_params']:,} parameters trainable ({100 * selection['trainable_fraction']:.2f}%)\n")
    write_yaml(path, selection, header=header, owner=Owner("select"), force=force)


def spectrum_reference_yaml(scan: dict, top_percent: float) -> tuple[str, dict]:
    """The reference spectrum.py's unfrozen-parameters YAML, line for line, and what it really trains.

    The reference ranks every type, 1-D norms included (they all score 1.0, so its "top" norms are simply the
    first layers), lists types alphabetically, and always adds lm_head and embed_tokens.
    """
    check_top_percent(top_percent)
    entries = [m for m in scan["modules"] if rankable(m)]
    entries += [{**m, "snr": 1.0, "expert": None} for m in scan["not_scannable"]]
    by_type: dict[str, list[dict]] = defaultdict(list)
    for entry in entries:
        by_type[entry["type"]].append(entry)
    lines = ["unfrozen_parameters:", "- ^lm_head.weight$", "- ^model.embed_tokens.weight$"]
    for kind in sorted(by_type):
        lines.append(f"# {kind} layers")
        members = sorted(by_type[kind], key=lambda m: (m["layer"] if m["layer"] is not None else -1, m["name"]))
        keep = int(len(members) * top_percent / 100)
        lines.extend(f"- {m['name']}" for m in sorted(members, key=lambda m: -m["snr"])[:keep])
    patterns = [line[2:] for line in lines if line.startswith("- ")]
    matched = matched_parameters(patterns, scan["parameters"], strict=False)
    notes = [f"pattern {p!r} matches no parameter" for p in patterns
             if not any(re.match(p, name) for name in scan["parameters"])]
    norm_types = sorted({m["type"] for m in scan["not_scannable"]})
    if norm_types:
        notes.append(f"1-D types {', '.join(norm_types)} all score 1.0: the reference's 'top' ones are the first layers")
    embed = [name for name in matched if re.match(r"^model\.embed_tokens\.weight$", name)]
    if embed:
        share = math.prod(scan["parameters"][embed[0]]) / scan["total_params"]
        notes.append(f"^model.embed_tokens.weight$ alone makes {100 * share:.1f}% of the model trainable"
                     + (" (tied to lm_head)" if scan.get("tied") else ""))
    trainable = sum(matched.values())
    stats = {"compat": "spectrum", "criterion": criteria.REFERENCE, "top_percent": top_percent, "unfrozen_parameters": patterns,
             "trainable_params": trainable, "total_params": scan["total_params"],
             "trainable_fraction": trainable / scan["total_params"], "notes": notes}
    return "\n".join(lines) + "\n", stats

