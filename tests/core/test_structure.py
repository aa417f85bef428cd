"""The package's structure: no import cycles, imports only down the pipeline (the core floor below every stage,
fetch < spectrum < training < evaluation < report < workflow), one reader of the safetensors format, the light
modules Snakemake imports while parsing stay free of torch, the rules' one import gathers only what they call."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import snrtune

PACKAGE = Path(snrtune.__file__).parent
WORKFLOW_LAYER = "snrtune.workflow"
# the pipeline's stages in order; a module of a stage may import the core floor (snrtune's top-level modules:
# errors, fileio, naming, hub, method_registry, artifact_names, model_dir, safetensors_header, …), its own stage
# and the stages before it, never a later one
STAGES = ("fetch", "spectrum", "training", "evaluation", "report", "workflow")
SAFETENSORS_READER = "snrtune.safetensors_header"


def module_names() -> dict[str, Path]:
    names = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = ("snrtune",) + path.relative_to(PACKAGE).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def imports_of(path: Path, known: set[str]) -> set[str]:
    """snrtune modules that ``path`` imports anywhere (function-local imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}  # from snrtune import methods
    return {name for name in found if name in known and name != "snrtune"}


def import_graph() -> dict[str, set[str]]:
    modules = module_names()
    return {name: imports_of(path, set(modules)) - {name} for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node):
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_graph_sees_function_local_imports():
    graph = import_graph()
    assert "snrtune.report.plots" in graph["snrtune.report.report"]  # imported inside build_report
    assert "snrtune.training.sft_data" in graph["snrtune.training.layout"]  # imported inside functions only
    assert {"snrtune.fetch.params", "snrtune.safetensors_header"} <= graph["snrtune.fetch.model"]


def test_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles():
    assert find_cycle(import_graph()) is None


def stage(module: str) -> int:
    """The module's place in the pipeline: -1 for the core floor, else the index of its stage in STAGES."""
    parts = module.split(".")
    return STAGES.index(parts[1]) if len(parts) > 1 and parts[1] in STAGES else -1


def upward_imports(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """(importer, imported) pairs where a module imports a later stage than its own."""
    return sorted((name, dep) for name, deps in graph.items() for dep in deps if stage(dep) > stage(name))


def test_the_stage_order_finds_an_upward_import():
    assert stage("snrtune.hub") == -1 and stage("snrtune.cli") == -1 and stage("snrtune.fetch.model") == 0
    assert stage("snrtune.workflow") == 5 and stage("snrtune.report.stats") == 4
    graph = {"snrtune.fetch.model": {"snrtune.spectrum.scan", "snrtune.hub"}, "snrtune.model_dir": {"snrtune.fetch"},
             "snrtune.report.tables": {"snrtune.training.sweep"}}
    assert upward_imports(graph) == [("snrtune.fetch.model", "snrtune.spectrum.scan"),
                                     ("snrtune.model_dir", "snrtune.fetch")]


def test_imports_go_only_down_the_pipeline():
    """fetch < spectrum < training < evaluation < report < workflow, over the core floor: no module imports a
    later stage than its own (what two stages share lives in the core floor), function-local imports included."""
    assert upward_imports(import_graph()) == []


def sources() -> dict[str, str]:
    return {name: path.read_text(encoding="utf-8") for name, path in module_names().items()}


def readers_of_safetensors_headers(texts: dict[str, str]) -> list[str]:
    """Modules that parse a safetensors header themselves: they unpack its 8-byte length (the struct module) or
    read its entries' offsets (``data_offsets``), or parse it with the safetensors library's header reader."""
    return sorted(name for name, text in texts.items()
                  if re.search(r"^\s*(import struct|from struct import)|\bdata_offsets\b|safe_open", text, re.M))


def test_the_reader_finder_sees_a_second_reader():
    assert readers_of_safetensors_headers({"a": "import json\nimport struct\nn = struct.unpack('<Q', raw)[0]",
                                           "b": "entry['data_offsets']", "c": "from safetensors import safe_open",
                                           "d": "from snrtune.safetensors_header import checkpoint_tensors"}) == \
        ["a", "b", "c"]


def test_one_module_reads_safetensors_headers():
    """snrtune.safetensors_header is the one reader of the format's header (fetch, scan, train, merge and the model
    checks take their tensors' names, dtypes, shapes and offsets from it)."""
    assert readers_of_safetensors_headers(sources()) == [SAFETENSORS_READER]


def test_the_rules_one_import_gathers_only_what_the_rules_call():
    """snrtune.workflow.config re-exports exactly the names the Snakefile and the rule files call through it."""
    from snrtune.workflow import config

    root = PACKAGE.parents[1]
    rules = [root / "workflow" / "Snakefile", *sorted((root / "workflow" / "rules").glob("*.smk"))]
    called = {m for path in rules for m in re.findall(r"\bworkflow_config\.(\w+)", path.read_text())}
    assert sorted(config.__all__) == sorted(called)
    assert all(getattr(config, name) is not None for name in config.__all__)


def test_no_core_module_imports_the_workflow_layer():
    """The workflow layer (snrtune.workflow.*) reads the core; no module outside it imports it."""
    importers = sorted(name for name, deps in import_graph().items() if not name.startswith(WORKFLOW_LAYER)
                       and any(dep.startswith(WORKFLOW_LAYER) for dep in deps))
    assert importers == []


def test_modules_snakemake_imports_while_parsing_load_no_torch():
    code = ("import sys; import snrtune.workflow.config, snrtune.method_registry, snrtune.naming, "
            "snrtune.training.settings, snrtune.training.setting_views, snrtune.hub; "
            "print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_conda_environment_pins_what_pyproject_requires():
    """envs/snrtune.yaml (the rules' software under --sdm conda) says its versions follow pyproject.toml: every
    package both name (dependencies and extras) carries the same version range, so a raised floor cannot be
    missed in one of them; a package named with extras (the vllm extra's lm-eval[vllm]) carries the same range as
    where it is named plainly."""
    import tomllib

    import yaml

    root = Path(__file__).resolve().parents[2]
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    required = project["dependencies"] + [spec for extra in project["optional-dependencies"].values() for spec in extra]
    env = yaml.safe_load((root / "envs" / "snrtune.yaml").read_text())
    pip = next(item["pip"] for item in env["dependencies"] if isinstance(item, dict))

    def by_name(specs, check_repeats=False):
        found = {}
        for spec in specs:
            name, plain = re.match(r"[A-Za-z0-9_.-]+", spec).group(0).lower(), re.sub(r"\[[^]]*\]|\s", "", spec)
            assert not check_repeats or found.setdefault(name, plain) == plain, f"{name}: {found[name]} vs {plain}"
            found[name] = plain
        return found

    ours, theirs = by_name(required, check_repeats=True), by_name(pip)
    shared = sorted(set(ours) & set(theirs))
    assert {"trl", "torch", "deepspeed"} <= set(shared)
    assert {name: theirs[name] for name in shared} == {name: ours[name] for name in shared}


def rule_commands() -> dict[str, set[str]]:
    """The `snrtune COMMAND` (or `{params.launcher} COMMAND`) each rule file's shell lines run."""
    rules = Path(__file__).resolve().parents[2] / "workflow" / "rules"
    found: dict[str, set[str]] = {}
    for smk in sorted(rules.glob("*.smk")):
        found[smk.stem] = set(re.findall(r"\{params\.env\}(?:snrtune|\{params\.launcher\}) ([a-z]+)", smk.read_text()))
    return found


def test_rule_file_sub_command_and_subpackage_are_one_hop_apart():
    """A newcomer reads workflow/rules/X.smk, sees `snrtune CMD`, and finds CMD's code in snrtune/X/: every rule
    file but common.smk runs only sub-commands whose module lives in the subpackage of the same name, and every
    sub-command is run by some rule."""
    from snrtune.cli import COMMANDS

    by_file = rule_commands()
    assert by_file.pop("common") == set()
    for stem, commands in by_file.items():
        assert commands, f"{stem}.smk runs no snrtune sub-command"
        for command in commands:
            assert COMMANDS[command][0].split(".")[1] == stem, (stem, command, COMMANDS[command][0])
    assert set().union(*by_file.values()) == set(COMMANDS)


def test_the_rules_spell_no_results_path_of_their_own():
    """Every results/ and logs/ path is a template of snrtune.workflow.paths (the rules and the config code fill
    the same ones), so a path cannot be renamed in one place and not the other."""
    root = Path(__file__).resolve().parents[2]
    sources = [root / "workflow" / "Snakefile", *sorted((root / "workflow" / "rules").glob("*.smk")),
               *sorted((PACKAGE / "workflow").glob("*.py"))]
    spelled = [(path.name, m.group(0)) for path in sources if path.name != "paths.py"
               for m in re.finditer(r"[\"'](results|logs)/[^\"']*", path.read_text())]
    assert spelled == []
