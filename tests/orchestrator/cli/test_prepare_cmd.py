"""`orch prepare` through `main`: shards and a summary out, one-line errors, resumable."""

from __future__ import annotations

import json

import pytest

from orchestrator.cli import main
from workers.manifest import read_manifest


@pytest.fixture
def corpus(tmp_path):
    """A folder of JSONL and a text file, a few hundred short documents."""
    src = tmp_path / "src"
    src.mkdir()
    lines = [
        json.dumps({"text": f"document {i}: the {i % 7} of {i % 11} and more"}) for i in range(300)
    ]
    (src / "a.jsonl").write_text("\n".join(lines) + "\n")
    (src / "notes.md").write_text("# notes\nsome markdown text\n")
    return src


def test_orch_prepare_writes_shards_and_says_how_a_plan_names_them(corpus, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["prepare", str(corpus), "--out", str(out), "--train-bpe", "300", "--val-frac", "0.1"]
    assert main([*argv, "--workers", "1", "--quiet"]) == 0
    printed, errors = capsys.readouterr()
    m = read_manifest(out)
    train, val = m.split("train"), m.split("val")
    assert val.documents > 0 and train.documents + val.documents == 301
    assert f"content hash: {m.content_hash}" in printed
    assert f"data: {{source: tokens, root: {out}, token_dtype: uint16}}" in printed
    assert f"shape.vocab >= {m.vocab_size}" in printed and "train" in printed
    assert errors == ""
    # The same command again: every input is reused, nothing is tokenized twice.
    assert main([*argv, "--workers", "1", "--quiet"]) == 0
    assert "1 reused from an earlier run" in capsys.readouterr().out
    assert read_manifest(out) == m


def test_orch_prepare_errors_are_one_line_naming_the_file(corpus, tmp_path, capsys):
    (corpus / "b.jsonl").write_text('{"text": "ok"}\n{"txt": "no text key"}\n')
    argv = ["prepare", str(corpus), "--out", str(tmp_path / "out"), "--train-bpe", "300"]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith(f"error: {corpus / 'b.jsonl'}:2: no key 'text'")
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err


def test_orch_prepare_needs_one_tokenizer_choice(corpus, tmp_path, capsys):
    out = ["--out", str(tmp_path / "out")]
    for extra in ([], ["--tokenizer", "t.json", "--train-bpe", "300"], ["--train-bpe", "0"]):
        with pytest.raises(SystemExit) as exit_:
            main(["prepare", str(corpus), *out, *extra])
        assert exit_.value.code == 2
    assert "--tokenizer" in capsys.readouterr().err
