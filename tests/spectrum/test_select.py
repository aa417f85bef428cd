"""`snrtune select`: per-type top t%, ties, budgets, includes, exports and the reference's YAML."""

import re

import pytest
import yaml

from snrtune.cli import main
from snrtune.errors import SnrtuneError
from snrtune import criteria
from snrtune.spectrum.select import criterion_selection, select, spectrum_reference_yaml


def fake_scan(snrs: dict[str, list[float]], tied: bool = True) -> dict:
    """A scan of a 4-layer model: q_proj 8×4 (+ bias 8), up_proj 6×4; embed 10×4 tied to lm_head; norms 1-D."""
    modules, parameters = [], {"model.embed_tokens.weight": [10, 4]}
    shapes = {"self_attn.q_proj": [8, 4], "mlp.up_proj": [6, 4]}
    for layer in range(4):
        for kind in shapes:
            name = f"model.layers.{layer}.{kind}"
            parameters[f"{name}.weight"] = shapes[kind]
            if kind == "self_attn.q_proj":
                parameters[f"{name}.bias"] = [8]
            modules.append({"name": name, "param": f"{name}.weight", "type": kind, "layer": layer, "expert": None,
                            "shape": shapes[kind], "snr": snrs[kind][layer], "status": "ok"})
        parameters[f"model.layers.{layer}.input_layernorm.weight"] = [4]
    parameters["model.norm.weight"] = [4]
    modules.append({"name": "model.embed_tokens", "param": "model.embed_tokens.weight", "type": "model.embed_tokens",
                    "layer": None, "expert": None, "shape": [10, 4], "snr": 0.5, "status": "ok"})
    if tied:
        modules.append({**modules[-1], "name": "lm_head", "param": "lm_head.weight", "type": "lm_head",
                        "tied_to": "model.embed_tokens"})
    not_scannable = [{"name": f"model.layers.{i}.input_layernorm", "param": f"model.layers.{i}.input_layernorm.weight",
                      "type": "input_layernorm", "layer": i, "shape": [4]} for i in range(4)]
    not_scannable.append({"name": "model.norm", "param": "model.norm.weight", "type": "model.norm", "layer": None,
                          "shape": [4]})
    total = sum(eval("*".join(map(str, s))) for s in parameters.values())
    return {"model": "fake", "modules": modules, "not_scannable": not_scannable, "parameters": parameters,
            "total_params": total, "tied": {"lm_head.weight": "model.embed_tokens.weight"} if tied else {}}


SNRS = {"self_attn.q_proj": [0.1, 0.9, 0.3, 0.7], "mlp.up_proj": [0.2, 0.2, 0.8, 0.2]}


def test_top_percent_per_type_with_exact_counts():
    scan = fake_scan(SNRS)
    sel = select(scan, top_percent=50)
    assert [m["name"] for m in sel["modules"]] == [
        "model.layers.2.mlp.up_proj", "model.layers.0.mlp.up_proj",  # 0.8, then the tie 0.2 in layer order
        "model.layers.1.self_attn.q_proj", "model.layers.3.self_attn.q_proj"]
    # two up_proj (6*4) + two q_proj with their biases (8*4 + 8)
    assert sel["trainable_params"] == 2 * 24 + 2 * 40
    assert sel["total_params"] == scan["total_params"] == 40 + 4 * (40 + 24 + 4) + 4
    assert sel["trainable_fraction"] == pytest.approx(128 / scan["total_params"])
    assert sel["unfrozen_parameters"][0] == r"^model\.layers\.2\.mlp\.up_proj\."
    assert select(scan, top_percent=25)["trainable_params"] == 24 + 40  # floor(4 * 0.25) = 1 per type
    assert len(select(scan, top_percent=74)["modules"]) == 4  # floor(4 * 0.74) = 2 per type


def test_exports_for_axolotl_laser_qlora_llama_factory_and_peft():
    sel = select(fake_scan(SNRS), top_percent=25, types=["self_attn.q_proj"])
    assert sel["exports"]["axolotl"]["unfrozen_parameters"] == ["^model.layers.1.self_attn.q_proj."]
    assert sel["exports"]["peft"]["target_modules"] == ["model.layers.1.self_attn.q_proj"]
    assert sel["exports"]["laser_qlora"]["lora_target_modules"] == ["model.layers.1.self_attn.q_proj"]
    assert sel["exports"]["llama_factory"]["lora_target"] == "layers.1.self_attn.q_proj"


def test_budget_picks_highest_snr_across_types_until_met():
    sel = select(fake_scan(SNRS), budget_params=40 + 24 + 24)
    # by SNR: q1 (0.9, 40) fits, up2 (0.8, 24) fits, q3 (0.7, 40) does not, q2 no, then up0 (0.2, 24) fits
    assert [m["name"] for m in sel["modules"]] == ["model.layers.1.self_attn.q_proj", "model.layers.2.mlp.up_proj",
                                                   "model.layers.0.mlp.up_proj"]
    assert sel["trainable_params"] == 88


def test_include_tied_lm_head_trains_the_embedding_and_says_so():
    sel = select(fake_scan(SNRS), top_percent=25, include=["lm_head"])
    assert r"^model\.embed_tokens\." in sel["unfrozen_parameters"]
    assert any("tied" in note for note in sel["notes"])
    assert sel["trainable_params"] == 24 + 40 + 40


def test_pattern_matching_nothing_is_an_error():
    scan = fake_scan(SNRS)
    del scan["parameters"]["model.layers.1.self_attn.q_proj.weight"], scan["parameters"]["model.layers.1.self_attn.q_proj.bias"]
    with pytest.raises(SnrtuneError, match=r"matches no parameter"):
        select(scan, top_percent=25)


@pytest.mark.parametrize("kwargs, message", [
    ({"top_percent": 0}, "out of range"),
    ({"top_percent": 150}, "out of range"),
    ({"top_percent": 25, "types": ["mlp.down_proj"]}, "'mlp.down_proj' is not a module type"),
    ({"top_percent": 10}, "selection is empty"),
    ({"top_percent": 25, "include": ["head"]}, "--include 'head' unknown"),
])
def test_bad_input_errors(kwargs, message):
    with pytest.raises(SnrtuneError, match=message):
        select(fake_scan(SNRS), **kwargs)


def test_compat_spectrum_reproduces_the_reference_yaml_line_for_line():
    text, stats = spectrum_reference_yaml(fake_scan(SNRS), 50)
    assert text == "\n".join([
        "unfrozen_parameters:",
        "- ^lm_head.weight$",
        "- ^model.embed_tokens.weight$",
        "# input_layernorm layers",
        "- model.layers.0.input_layernorm",  # all norms score 1.0: "top" is layer order
        "- model.layers.1.input_layernorm",
        "# lm_head layers",
        "# mlp.up_proj layers",
        "- model.layers.2.mlp.up_proj",
        "- model.layers.0.mlp.up_proj",
        "# model.embed_tokens layers",
        "# model.norm layers",
        "# self_attn.q_proj layers",
        "- model.layers.1.self_attn.q_proj",
        "- model.layers.3.self_attn.q_proj",
    ]) + "\n"
    assert "pattern '^lm_head.weight$' matches no parameter" in stats["notes"]  # tied: no lm_head parameter
    assert stats["criterion"] == "snr"  # the YAML is the reference's, line for line: its criterion is stated here
    assert stats["trainable_params"] == 40 + 2 * 4 + 2 * 24 + 2 * 40


def test_cli_writes_yaml_with_count_header(tmp_path, capsys):
    import json

    (tmp_path / "snr.json").write_text(json.dumps(fake_scan(SNRS)))
    assert main(["select", str(tmp_path / "snr.json"), "--top-percent", "50", "--out", str(tmp_path / "sel.yaml")]) == 0
    text = (tmp_path / "sel.yaml").read_text()
    assert text.startswith("# snrtune selection by snr: 128 of")
    data = yaml.safe_load(text)
    assert data["top_percent"] == 50 and data["trainable_params"] == 128 and "*id" not in text
    assert "128 of" in capsys.readouterr().out
    assert main(["select", str(tmp_path / "nope.json"), "--top-percent", "50", "--out", str(tmp_path / "x.yaml")]) == 2
    assert "not found" in capsys.readouterr().err and not (tmp_path / "x.yaml").exists()


@pytest.mark.parametrize("top", [-50, 0, 150, float("nan"), float("inf")])
def test_compat_spectrum_checks_the_range_as_the_normal_path(top):
    with pytest.raises(SnrtuneError, match="out of range: expected a percentage in \\(0, 100\\]"):
        spectrum_reference_yaml(fake_scan(SNRS), top)
    with pytest.raises(SnrtuneError, match="out of range"):
        select(fake_scan(SNRS), top_percent=top)


def test_entries_without_a_finite_snr_are_never_ranked():
    """An snr.json from an older scan may say status ok with snr null (or NaN): listed in a note, not ranked."""
    scan = fake_scan(SNRS)
    scan["modules"][0]["snr"] = None                   # layer 0 q_proj
    scan["modules"][2]["snr"] = float("nan")           # layer 1 q_proj
    scan["modules"][3]["status"] = "nonfinite_snr"     # layer 1 up_proj
    scan["modules"][3]["snr"] = None
    sel = select(scan, top_percent=100)
    names = [m["name"] for m in sel["modules"]]
    assert "model.layers.0.self_attn.q_proj" not in names and "model.layers.1.self_attn.q_proj" not in names
    assert len(names) == 8 - 3
    assert any(note.startswith("3 matrices are not ranked (1 with a non-finite SNR") and "2 without an SNR" in note
               for note in sel["notes"]), sel["notes"]
    text, stats = spectrum_reference_yaml(scan, 100)
    assert "- model.layers.0.self_attn.q_proj\n" not in text and stats["trainable_params"] > 0
    budget = select(scan, budget_params=10_000)
    assert "model.layers.0.self_attn.q_proj" not in [m["name"] for m in budget["modules"]]


# --- other criteria: as many modules per type as the SNR selection, ranked by the criterion ---------------------

def _per_type(selection):
    from collections import Counter

    return Counter(m["type"] for m in selection["modules"])


def scored_scan():
    """fake_scan with kappa and alpha scores (q_proj κ lowest at layer 2, α highest at layer 0)."""
    scan = fake_scan(SNRS)
    scores = {"self_attn.q_proj": ([9.0, 5.0, 1.5, 7.0], [2.0, 3.0, 4.0, 5.0]),
              "mlp.up_proj": ([4.0, 3.0, 2.0, 1.0], [6.0, 2.5, 3.5, 4.5])}
    for module in scan["modules"]:
        if module["type"] in scores:
            kappa, alpha = scores[module["type"]]
            module.update(kappa=kappa[module["layer"]], alpha=alpha[module["layer"]])
    return scan


@pytest.mark.parametrize("name, expected", [
    ("lowest-snr", ["model.layers.0.mlp.up_proj", "model.layers.0.self_attn.q_proj"]),  # 0.2 ties: layer order
    ("kappa", ["model.layers.2.self_attn.q_proj", "model.layers.3.mlp.up_proj"]),       # the lowest κ
    ("alpha", ["model.layers.0.mlp.up_proj", "model.layers.3.self_attn.q_proj"]),       # the highest α
    ("position", ["model.layers.3.mlp.up_proj", "model.layers.3.self_attn.q_proj"]),    # the last layer
])
def test_each_criterion_takes_its_end_of_the_ranking(name, expected):
    scan = scored_scan()
    sel = criterion_selection(scan, select(scan, top_percent=25), name)
    assert sorted(m["name"] for m in sel["modules"]) == expected
    assert sel["selection"] == name and sel["seed"] is None
    key = criteria.get(name).key
    assert all(key in m for m in sel["modules"])  # the score it ranked by, beside the SNR


@pytest.mark.parametrize("t", [25, 50])
def test_random_mirrors_per_type_counts_and_parameters(t):
    scan = fake_scan(SNRS)
    snr = select(scan, top_percent=t, include=["lm_head"])
    control = criterion_selection(scan, snr, "random", seed=0)
    assert _per_type(control) == _per_type(snr)
    assert control["trainable_params"] == snr["trainable_params"]
    assert control["selection"] == "random" and control["seed"] == 0 and snr["selection"] == "snr"
    assert control["mirrors"]["top_percent"] == t and control["mirrors"]["trainable_params"] == snr["trainable_params"]
    assert r"^model\.embed_tokens\." in control["unfrozen_parameters"]  # included whole matrices are kept
    assert {export["criterion"] for export in control["exports"].values()} == {"random"}


def test_random_depends_on_its_seed_only_and_nests_across_t():
    scan = fake_scan({"self_attn.q_proj": [0.1] * 4, "mlp.up_proj": [0.2] * 4})
    snr = select(scan, top_percent=50)
    picks = {seed: [m["name"] for m in criterion_selection(scan, snr, "random", seed=seed)["modules"]]
             for seed in range(8)}
    assert picks[3] == [m["name"] for m in criterion_selection(scan, snr, "random", seed=3)["modules"]]
    assert len({tuple(sorted(p)) for p in picks.values()}) > 1  # 6 × 6 possible selections: seeds differ
    quarter = criterion_selection(scan, select(scan, top_percent=25), "random", seed=3)
    assert {m["name"] for m in quarter["modules"]} <= set(picks[3])  # one seed: t=25's modules within t=50's


def test_a_criterion_of_unequal_module_sizes_beyond_one_percent_is_an_error():
    scan = fake_scan(SNRS)
    scan["parameters"]["model.layers.0.mlp.up_proj.weight"] = [60, 4]  # one up_proj 10× the others
    snr = select(scan, top_percent=25)  # up_proj of layer 2 (24 parameters)
    with pytest.raises(SnrtuneError, match="more than 1% apart"):
        criterion_selection(scan, snr, "lowest-snr")  # the lowest-SNR up_proj is the big one


def test_a_scan_without_the_criterions_scores_or_too_few_of_them_is_refused():
    scan = fake_scan(SNRS)  # an older snr.json: no kappa
    with pytest.raises(SnrtuneError, match="no 'kappa' scores .* run `snrtune scan` again"):
        criterion_selection(scan, select(scan, top_percent=50), "kappa")
    scan = scored_scan()
    for module in scan["modules"][:6]:  # layers 0-2: κ not resolved (null)
        module["kappa"] = None
    with pytest.raises(SnrtuneError, match="type 'mlp.up_proj' has 1 modules with a kappa score, fewer than the 2"):
        criterion_selection(scan, select(scan, top_percent=50), "kappa")


def test_cli_criterion_and_the_older_flags(tmp_path, capsys):
    import json

    (tmp_path / "snr.json").write_text(json.dumps(scored_scan()))
    run = lambda *flags, out: main(["select", str(tmp_path / "snr.json"), "--top-percent", "50", *flags,
                                    "--out", str(tmp_path / out)])
    assert run("--criterion", "random", "--seed", "1", out="r.yaml") == 0
    text = (tmp_path / "r.yaml").read_text()
    assert text.startswith("# snrtune selection by random: 128 of")
    data = yaml.safe_load(text)
    assert data["selection"] == "random" and data["seed"] == 1 and data["trainable_params"] == 128
    assert data["mirrors"]["top_percent"] == 50 and len(data["mirrors"]["modules"]) == 4
    assert data["exports"]["axolotl"]["criterion"] == data["exports"]["llama_factory"]["criterion"] == "random"
    assert run("--random", "--seed", "1", out="r-old.yaml") == 0  # the older spelling, the same selection
    assert yaml.safe_load((tmp_path / "r-old.yaml").read_text())["modules"] == data["modules"]
    assert run("--lowest", out="l.yaml") == 0 and run("--criterion", "lowest-snr", out="l2.yaml") == 0
    assert yaml.safe_load((tmp_path / "l.yaml").read_text())["modules"] == \
        yaml.safe_load((tmp_path / "l2.yaml").read_text())["modules"]
    assert run("--criterion", "kappa", "--compat", "spectrum", out="x.yaml") == 2
    assert "--compat spectrum" in capsys.readouterr().err and not (tmp_path / "x.yaml").exists()
    assert run("--criterion", "kapa", out="y.yaml") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'kapa' is not one of snr, random, lowest-snr, kappa, alpha, position" in err
    assert run("--criterion", "kappa", "--random", out="z.yaml") == 2  # one criterion per selection


@pytest.mark.slow
def test_random_control_parameters_equal_spectrum_on_smollm2(smollm2_dir, tmp_path):
    from snrtune.spectrum.scan import load_scan, scan

    scan(smollm2_dir, tmp_path / "snr.json")
    result = load_scan(tmp_path / "snr.json")
    for t in (25, 50):
        snr = select(result, top_percent=t)
        for name in criteria.controls():
            for seed in (0, 1) if criteria.get(name).seeded else (0,):
                control = criterion_selection(result, snr, name, seed=seed)
                assert control["trainable_params"] == snr["trainable_params"]  # equal shapes per type: exact
                assert _per_type(control) == _per_type(snr)
        assert control["modules"] != criterion_selection(result, snr, "random", seed=0)["modules"]


@pytest.mark.parametrize("arch", ["llama", "mistral", "qwen2", "phi3", "gpt2", "mixtral"])
def test_every_criterion_selects_as_many_modules_per_type_on_every_architecture(arch, tiny_model_factory, tmp_path):
    """Llama, Mistral, Qwen2, Phi-3 (fused qkv), GPT-2 (Conv1D), Mixtral (fused experts): each criterion's selection
    at t=50 has the SNR selection's module count per type, and its file and exports state the criterion; in a
    dense model the trainable parameters are equal too."""
    from snrtune.spectrum.scan import load_scan, scan
    from snrtune.spectrum.select import write_selection
    from snrtune.spectrum.selection_file import load_selection

    scan(tiny_model_factory(arch), tmp_path / "snr.json")
    result = load_scan(tmp_path / "snr.json")
    snr = select(result, top_percent=50)
    for name in criteria.controls():
        sel = criterion_selection(result, snr, name, seed=1)
        assert _per_type(sel) == _per_type(snr), name
        if arch != "mixtral":
            assert sel["trainable_params"] == snr["trainable_params"], name
        write_selection(tmp_path / f"{name}.yaml", sel)
        read = load_selection(tmp_path / f"{name}.yaml", method="laser-qlora")
        assert read["selection"] == name and {e["criterion"] for e in read["exports"].values()} == {name}


def axolotl_unfrozen(patterns: list[str], names) -> set[str]:
    """axolotl's own rule for ``unfrozen_parameters`` (axolotl 0.21.0, src/axolotl/utils/freeze.py:
    ``freeze_layers_except`` builds a ``LayerNamePattern`` per entry): an optional trailing ``[start:end]``
    range is cut off (it limits rows, not names); in the rest every ``.`` not followed by ``+`` is replaced
    by ``\\.``; a parameter stays trainable when ``re.match`` of any such pattern succeeds on its
    ``named_parameters()`` name. Restated here, not imported: axolotl is not a dependency."""
    regexes = []
    for pattern in patterns:
        ranged = re.match(r"^(.+)\[([0-9]*)(?::([0-9]*))?\]$", pattern)
        base = ranged.group(1) if ranged else pattern
        regexes.append(re.compile(re.sub(r"\.(?!\+)", r"\\.", base)))
    return {name for name in names if any(regex.match(name) for regex in regexes)}


@pytest.mark.parametrize("arch", ["qwen2", "mixtral"])
def test_axolotl_export_unfreezes_exactly_the_selected_modules_under_axolotls_rule(arch, tiny_model_factory,
                                                                                  tmp_path):
    """qwen2: q/k/v projections with biases, tied embeddings; mixtral: fused 3-D expert tensors."""
    import transformers

    from snrtune.spectrum.scan import scan

    model_dir = tiny_model_factory(arch)
    result = scan(model_dir, tmp_path / "snr.json")
    sel = select(result, top_percent=50, include=["lm_head"])
    named = dict(transformers.AutoModelForCausalLM.from_pretrained(model_dir).named_parameters())
    selected = {result["tied"].get(m["param"], m["param"]) for m in sel["modules"]}  # a tied lm_head: embed_tokens
    expected = {name for name in named if name in selected
                or any(name.startswith(param[: -len("weight")]) for param in selected if param.endswith(".weight"))}
    assert any(name.endswith(".bias") for name in expected) == (arch == "qwen2")  # biases go with their weights
    unfrozen = axolotl_unfrozen(sel["exports"]["axolotl"]["unfrozen_parameters"], named)
    assert unfrozen == expected
    assert sum(named[name].numel() for name in unfrozen) == sel["trainable_params"]
    # snrtune's own (escaped) patterns select the same parameters with plain re.match ...
    assert {n for n in named if any(re.match(p, n) for p in sel["unfrozen_parameters"])} == expected
    # ... and under axolotl's rule match nothing: the export it used to write trained no parameter there
    assert axolotl_unfrozen(sel["unfrozen_parameters"], named) == set()


def test_llama_factory_lora_target_wraps_exactly_the_selected_modules(tiny_model_factory, tmp_path):
    """LLaMA-Factory (src/llamafactory/model/adapter.py, ``_setup_lora_tuning``) splits ``lora_target`` at
    commas and hands the list to peft's ``LoraConfig(target_modules=…)``; peft wraps each module whose name
    equals an entry or ends with "." + an entry. Checked here with peft itself."""
    import peft
    import transformers

    from snrtune.spectrum.scan import scan

    model_dir = tiny_model_factory("qwen2")
    sel = select(scan(model_dir, tmp_path / "snr.json"), top_percent=34)
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir)
    targets = [t.strip() for t in sel["exports"]["llama_factory"]["lora_target"].split(",")]
    wrapped = peft.get_peft_model(model, peft.LoraConfig(r=2, target_modules=targets))
    lora = {name.removeprefix("base_model.model.") for name, module in wrapped.named_modules()
            if hasattr(module, "lora_A") and isinstance(module, peft.tuners.lora.LoraLayer)}
    assert lora == {m["name"] for m in sel["modules"]} and len(lora) == 7  # per type 1 of 3 layers, 7 types
