"""`snrtune prefetch`: what offline jobs need, fetched where the hub is reachable; one line where it is not."""

import json

import pytest

from snrtune import cli
from snrtune.errors import SnrtuneError
from snrtune.fetch.prefetch import prefetch_dataset
from snrtune.hub import offline_variables as offline


def test_a_local_file_needs_no_download(tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text('{"instruction": "a", "output": "b"}\n')
    assert prefetch_dataset(str(data)) == {"source": str(data), "kind": "local"}


def test_a_hub_dataset_while_offline_is_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    assert offline() == ["HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"]
    with pytest.raises(SnrtuneError, match="cannot prefetch hub dataset 'jondurbin/airoboros-3.1': HF_HUB_OFFLINE "
                                           "and HF_DATASETS_OFFLINE set"):
        prefetch_dataset("jondurbin/airoboros-3.1")
    out = tmp_path / "prefetch.json"
    assert cli.main(["prefetch", "--data", "jondurbin/airoboros-3.1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("snrtune prefetch: error: cannot prefetch hub dataset") and err.count("\n") == 1
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_neither_file_nor_hub_id(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(SnrtuneError, match="neither an existing file nor a hub dataset id"):
        prefetch_dataset("no/such/file.jsonl")


def test_shipped_tasks_load_offline_and_the_record_says_what(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    out = tmp_path / "tasks.json"
    assert cli.main(["prefetch", "--tasks", "snrtune_toolcall,snrtune_retention", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record.pop("snrtune_output")["step"] == "prefetch"  # the mark: prefetch's own output
    assert record == {"hf_home": str(tmp_path / "hf"), "data": None, "tasks": ["snrtune_toolcall", "snrtune_retention"]}
