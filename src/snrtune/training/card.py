"""The model card of a merged model: README.md with the Hugging Face Hub's YAML metadata and what snrtune recorded.

`snrtune merge` writes it into MERGED_DIR from the run's records: its identity (snrtune_run.json, with the
``base_source`` merge adds), its metrics.json (the training settings, the selection, the data) and where the base
model came from (its snrtune_source.json). The metadata: ``base_model`` (the hub id, when the base model was fetched
from the hub), ``library_name: transformers``, ``tags`` (snrtune and the method) and ``datasets`` (the training
data, when it is a hub dataset). `snrtune report` writes the completed card — the same, plus the scores — into its
own output (snrtune.report.cards), since no step rewrites another step's output.
"""

from __future__ import annotations

from pathlib import Path

import yaml

import snrtune
from snrtune import criteria

LIBRARY = "transformers"


def base_model_id(source: dict | None) -> str | None:
    """The hub id of the base model, when `snrtune fetch` took it from the hub (a local, GGUF or pkg:// source
    has no id the Hub knows)."""
    return source["source"] if source and source.get("kind") == "hub" else None


def hub_datasets(metrics: dict) -> list[str]:
    data = metrics.get("data") or {}
    return [data["source"]] if data.get("kind") == "hub" and data.get("source") else []


def tags(identity: dict) -> list[str]:
    out = ["snrtune", identity["method"]]
    if identity.get("stage") and identity["stage"] != "sft":
        out.append(identity["stage"])
    return out


def card_data(identity: dict, metrics: dict, source: dict | None, eval_results: list | None = None):
    """The card's metadata as huggingface_hub's ModelCardData (``eval_results`` becomes its model-index)."""
    from huggingface_hub import ModelCardData

    return ModelCardData(base_model=base_model_id(source), library_name=LIBRARY, tags=tags(identity),
                         datasets=hub_datasets(metrics) or None, model_name=identity["id"],
                         eval_results=eval_results or None)


def _count(n) -> str:
    return "–" if n is None else f"{n:,}"


def _source_line(source: dict | None) -> str:
    if not source:
        return "not recorded"
    revision = f", revision {source['revision']}" if source.get("revision") else ""
    return f"`{source['source']}` ({source.get('kind', 'unknown')}{revision})"


def selection_lines(metrics: dict) -> list[str]:
    """t (or the budget), the selection kind (and criterion where recorded), the number of modules and the
    trainable parameters, from metrics.json's ``selection`` summary."""
    sel = metrics.get("selection")
    if not sel:
        return []
    if sel.get("top_percent") is not None:
        amount = f"the top {sel['top_percent']:g} % of the modules of each type"
    else:
        amount = f"a budget of {_count(sel.get('budget_params'))} parameters"
    kind = criteria.canonical(sel.get("selection") or criteria.REFERENCE)
    criterion = criteria.find(kind)
    how = {"snr": "ranked by SNR", "random": f"chosen at random (seed {sel.get('seed')}), as many per type as the "
                                            "SNR selection"}.get(kind) or (
        f"the {criterion.direction} by {criterion.label}, as many per type as the SNR selection" if criterion else kind)
    modules = sel.get("target_modules") or sel.get("unfrozen_parameters") or []
    lines = [f"- selection: {amount}, {how}" + (f"; criterion {sel['criterion']}" if sel.get("criterion") else ""),
             f"- selection kind: {kind}", f"- modules: {len(modules)}"]
    if sel.get("trainable_params") is not None and sel.get("total_params"):
        share = 100 * sel["trainable_params"] / sel["total_params"]
        lines.append(f"- selected parameters: {_count(sel['trainable_params'])} of {_count(sel['total_params'])} "
                     f"({share:.1f} %)")
    return lines


def training_lines(metrics: dict) -> list[str]:
    config, setup = metrics.get("config") or {}, metrics.get("setup") or {}
    budget, data = metrics.get("budget") or {}, metrics.get("data") or {}
    details = metrics.get("details") or {}
    lines = []
    if data:
        rows = f", {data['rows']} rows ({data.get('train_rows')} train, {data.get('val_rows')} validation)" \
            if data.get("rows") is not None else ""
        lines.append(f"- data: `{data.get('source')}` ({data.get('kind')}, {data.get('format')} format{rows}; "
                     f"sha256 {str(data.get('sha256'))[:12]}…)")
    if metrics.get("trainable_params") is not None:
        lines.append(f"- trainable parameters: {_count(metrics['trainable_params'])} of "
                     f"{_count(metrics.get('total_params'))}")
    if budget:
        lines.append(f"- steps: {details.get('global_step', budget.get('max_steps'))} of {budget.get('max_steps')}, "
                     f"{budget.get('examples_per_step')} examples per step on {budget.get('world_size')} process(es)")
    if config:
        lines.append(f"- learning rate {config.get('learning_rate')} ({config.get('lr_scheduler_type')}, "
                     f"{config.get('optim')}), sequence length {config.get('max_seq_length')}")
    if setup.get("lora_r") is not None:
        lines.append(f"- LoRA: r {setup['lora_r']}, alpha {setup.get('lora_alpha')}, scale {setup.get('lora_scale')}"
                     + (", rsLoRA" if setup.get("use_rslora") else "")
                     + (f", rank matched to {setup['match_params_of']}" if setup.get("match_params_of") else ""))
    return lines


def card_body(identity: dict, metrics: dict, source: dict | None, evaluation: str = "") -> str:
    """The card's markdown: what the model is, its base, method, selection and training settings as recorded,
    then ``evaluation`` (the report's scores), or a note that the report has them."""
    status = identity.get("status") or metrics.get("status") or "finished"
    parts = [f"# {identity['id']}\n",
             f"`{identity.get('model')}` fine-tuned with **{identity['method']}** (seed {identity.get('seed')}, "
             f"stage {identity.get('stage', 'sft')}) by snrtune {snrtune.__version__}, "
             "which compares fine-tuning methods on equal data and budget.\n"]
    if status != "finished":
        parts.append(f"**This run {status}**: a logged training or validation loss became non-finite, so it was "
                     "not evaluated. Do not publish it as a working model.\n")
    if identity.get("sweep_candidate"):
        parts.append(f"A learning-rate sweep candidate (learning rate {identity.get('learning_rate')}), not the run "
                     "the sweep picked.\n")
    parts.append("## Model\n")
    parts.append(f"- base model: {_source_line(source)}")
    parts.append(f"- method: {identity['method']}" + (f" — {identity['merge']}" if identity.get("merge") else ""))
    parts.append(f"- form: {identity.get('model_form', 'merged-full-precision')}: a standard Hugging Face model "
                 "directory (`AutoModelForCausalLM.from_pretrained`), with the tokenizer and chat template the run "
                 "trained with\n")
    selection = selection_lines(metrics)
    if selection:
        parts.append("## Selection\n")
        parts.append("\n".join(selection) + "\n")
    training = training_lines(metrics)
    if training:
        parts.append("## Training\n")
        parts.append("\n".join(training) + "\n")
    if metrics.get("config"):
        parts.append("Every training setting, as recorded in the run's metrics.json (`config`):\n")
        parts.append("```yaml\n" + yaml.safe_dump(metrics["config"], sort_keys=False) + "```\n")
    parts.append(evaluation or "## Evaluation\n\nNot in this card: `snrtune report` writes this card with the "
                 "model's scores, their 95 % intervals and its paired comparisons into its own directory "
                 "(REPORT_DIR/model_cards/; docs/artifacts.md).\n")
    return "\n".join(parts)


def card_text(identity: dict, metrics: dict, source: dict | None, eval_results: list | None = None,
              evaluation: str = "") -> str:
    """The whole README.md: the YAML metadata between --- lines, then the body."""
    data = card_data(identity, metrics, source, eval_results)
    return f"---\n{data.to_yaml()}\n---\n\n{card_body(identity, metrics, source, evaluation)}"


def write_card(path: str | Path, identity: dict, metrics: dict, source: dict | None, **extra) -> Path:
    path = Path(path)
    path.write_text(card_text(identity, metrics, source, **extra), encoding="utf-8")
    return path
