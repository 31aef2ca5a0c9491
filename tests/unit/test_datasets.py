"""Workload datasets: ShareGPT files (read, filtered as bench_serving does, errors naming file and line)
and shared system prompts."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import yaml

from tuner.core.errors import ConfigError
from tuner.loadgen.prompts import make_prompts
from tuner.space import load_space
from tuner.space.datasets import read_sharegpt, read_trace, sharegpt_requests
from tuner.space.workload import ShareGPTDataset, WorkloadSpec
from tuner.testing import ROOT

EXAMPLE = ROOT / "search_spaces" / "data" / "sharegpt-small.json"


def _conv(*turns: tuple[str, str]) -> dict[str, object]:
    return {"conversations": [{"from": who, "value": text} for who, text in turns]}


def _words(n: int, word: str = "word") -> str:
    return " ".join([word] * n)


def _spec(path: Path, **kw: object) -> ShareGPTDataset:
    return ShareGPTDataset(kind="sharegpt", path=str(path), **kw)


def test_first_turns_with_their_reply_length_and_bench_serving_filters(tmp_path: Path) -> None:
    data = [
        _conv(("human", _words(10)), ("gpt", _words(30)), ("human", _words(5)), ("gpt", _words(7))),
        _conv(("system", "be brief"), ("human", _words(1)), ("gpt", _words(30))),  # prompt < min_len
        _conv(("human", _words(1100)), ("gpt", _words(30))),  # prompt > 1024
        _conv(("human", _words(1000)), ("gpt", _words(1100))),  # prompt + reply > 2048
        _conv(
            ("gpt", "a greeting first"), ("human", _words(3)), ("gpt", _words(4))
        ),  # starts at the human turn
        _conv(("human", _words(8))),  # never answered
    ]
    path = tmp_path / "d.json"
    path.write_text(json.dumps(data))
    first = sharegpt_requests(_spec(path))
    assert [(r.prompt_words, r.output_len) for r in first] == [(10, 30), (3, 4)]
    # every turn, each with the conversation before it as its context
    every = sharegpt_requests(_spec(path, turns="all"))
    assert [(r.prompt_words, r.output_len) for r in every] == [(10, 30), (10 + 30 + 5, 7), (3, 4)]
    assert every[1].text.endswith(_words(5)) and every[1].text.startswith(_words(10))
    # a fixed answer length instead of the reply's; JSONL reads the same
    lines = tmp_path / "d.jsonl"
    lines.write_text("\n".join(json.dumps(c) for c in data) + "\n\n")
    # (prompt + 16 fits the total where prompt + its 1100-word reply did not)
    assert [(r.prompt_words, r.output_len) for r in sharegpt_requests(_spec(lines, output_len=16))] == [
        (10, 16),
        (1000, 16),
        (3, 16),
    ]


@pytest.mark.parametrize(
    ("content", "where", "says"),
    [
        ('{"conversations": []}\n{"conversations": [}\n', "d.jsonl:2", "not valid JSON"),
        ('[{"conversations": "hi"}]', "d.jsonl: entry 0", "conversations"),
        ('["just text"]', "d.jsonl: entry 0", "must be a JSON object"),
        ('{"conversations": [{"from": "human", "value": 3}]}', "d.jsonl:1", "conversations[0]"),
        ('{"conversations": [{"from": "robot", "value": "x"}]}', "d.jsonl:1", "unknown speaker 'robot'"),
        ("\n\n", "d.jsonl", "holds no conversations"),
    ],
)
def test_a_bad_file_names_its_line_or_entry(tmp_path: Path, content: str, where: str, says: str) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(content)
    with pytest.raises(ConfigError) as e:
        read_sharegpt(path)
    assert str(e.value).startswith(str(tmp_path / where)) and says in str(e.value), str(e.value)


def test_the_space_loader_reads_the_dataset_and_names_the_field(tmp_path: Path) -> None:
    raw = yaml.safe_load((ROOT / "search_spaces" / "sglang-rtx5090-qwen3-32b-awq.yaml").read_text())
    space_file = tmp_path / "space.yaml"

    def load(dataset: dict[str, object], **workload: object) -> None:
        raw["workload"] = {**raw["workload"], "dataset": dataset, **workload}
        space_file.write_text(yaml.safe_dump(raw))
        load_space(space_file)

    load({"kind": "sharegpt", "path": str(EXAMPLE)})  # the shipped example loads
    with pytest.raises(ConfigError, match=r"missing\.json.*cannot read dataset file"):
        load({"kind": "sharegpt", "path": str(tmp_path / "missing.json")})
    tiny = tmp_path / "tiny.json"
    tiny.write_text(json.dumps([_conv(("human", "hi"), ("gpt", "hello there"))]))
    with pytest.raises(ConfigError, match=r"workload\.dataset.*no first turn within the length limits"):
        load({"kind": "sharegpt", "path": str(tiny), "min_len": 3})
    with pytest.raises(ConfigError, match="prompts_file and dataset both say where prompts come from"):
        load({"kind": "shared_prefix", "groups": 2, "prefix_len": 8}, prompts_file=str(tiny))


def test_the_fingerprint_follows_the_data_not_its_path(tmp_path: Path) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(EXAMPLE.read_text())
    b.write_text(EXAMPLE.read_text())

    def fp(path: Path) -> str:
        return WorkloadSpec(num_requests=4, dataset={"kind": "sharegpt", "path": str(path)}).fingerprint()

    assert fp(a) == fp(b)
    b.write_text(json.dumps([_conv(("human", _words(4)), ("gpt", _words(4)))]))
    assert fp(a) != fp(b)


def test_shared_prefixes_repeat_exactly_for_the_share_of_requests() -> None:
    workload = WorkloadSpec(
        num_requests=400, input_len=12, output_len=4, seed=3,
        dataset={"kind": "shared_prefix", "groups": 4, "prefix_len": 50, "share": 0.75},
    )  # fmt: skip
    prompts = [p for p, _ in zip(make_prompts(workload), range(400), strict=False)]
    heads = [p.text.split("\n")[0] for p in prompts if p.text and "\n" in p.text]
    assert len(set(heads)) == 4 and all(len(h.split()) == 50 for h in heads)
    assert 0.68 < len(heads) / 400 < 0.82  # the share, within sampling error
    assert {p.prompt_tokens for p in prompts if "\n" in (p.text or "")} == {62}
    assert {p.prompt_tokens for p in prompts if "\n" not in (p.text or "")} == {12}
    again = [p for p, _ in zip(make_prompts(workload), range(400), strict=False)]
    assert again == prompts  # the seed fixes everything


TRACE = ROOT / "search_spaces" / "data" / "trace-small.jsonl"


@pytest.mark.parametrize(
    ("lines", "where", "says"),
    [
        (['{"timestamp": 0, "input_length": 8, "output_length": 4}', "{oops"], ":2", "not valid JSON"),
        (
            ['{"timestamp": 5, "input_length": 0, "output_length": 4}'],
            ":1",
            "input_length: must be a positive integer",
        ),
        (['{"timestamp": -1, "input_length": 8, "output_length": 4}'], ":1", "timestamp: must be a number"),
        (
            [
                '{"timestamp": 9, "input_length": 8, "output_length": 4}',
                '{"timestamp": 3, "input_length": 8, "output_length": 4}',
            ],
            ":2",
            "timestamps must not decrease",
        ),
        (['{"timestamp": 0, "input_length": 8, "output_length": 4, "hash_ids": [1, "a"]}'], ":1", "hash_ids"),
    ],
)
def test_a_bad_trace_names_its_line(tmp_path: Path, lines: list[str], where: str, says: str) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError) as e:
        read_trace(path)
    assert str(e.value).startswith(f"{path}{where}") and says in str(e.value), str(e.value)


def test_trace_prompts_keep_times_lengths_and_shared_blocks(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    rows = [(1000, 100, 5, [0, 1, 7]), (1500, 70, 6, [0, 1]), (3000, 30, 7, [9])]
    path.write_text("".join(json.dumps({"timestamp": t, "input_length": n, "output_length": m, "hash_ids": ids})
                            + "\n" for t, n, m, ids in rows))  # fmt: skip
    workload = WorkloadSpec(num_requests=6, dataset={"kind": "trace", "path": str(path), "block_size": 32},
                            arrival={"kind": "trace", "speed": 2})  # fmt: skip
    prompts = [p for p, _ in zip(make_prompts(workload), range(6), strict=False)]
    assert [p.at_s for p in prompts] == [0.0, 0.5, 2.0, 3.0, 3.5, 5.0]  # again after one mean gap (1 s)
    assert [(p.prompt_tokens, p.output_len) for p in prompts[:3]] == [(100, 5), (70, 6), (30, 7)]
    assert all(len((p.text or "").split()) == p.prompt_tokens for p in prompts)
    words = [(p.text or "").split() for p in prompts]
    assert words[0][:64] == words[1][:64]  # blocks 0 and 1: the same 64 words
    assert words[0][64:96] != words[2][:32]  # blocks 7 and 9 differ
    assert words[3][:64] == words[0][:64]  # the replay repeats the blocks
    with pytest.raises(ValueError, match="arrival kind 'trace' replays a trace's timestamps"):
        WorkloadSpec(num_requests=4, arrival={"kind": "trace"})
    assert read_trace(TRACE)[-1].at_s < 60  # the shipped example reads


def test_sessions_keep_each_conversation_whole_and_in_order(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    data = [_conv(*[(w, _words(3 + k)) for k in range(n) for w in ("human", "gpt")]) for n in (1, 3, 2)]
    path.write_text(json.dumps(data))
    workload = WorkloadSpec(num_requests=6, dataset={"kind": "sharegpt", "path": str(path), "turns": "all"},
                            arrival={"kind": "sessions", "clients": 2})  # fmt: skip
    prompts = [p for p, _ in zip(make_prompts(workload), range(12), strict=False)]
    sessions = [p.session for p in prompts]
    assert sessions[:6] == sorted(sessions[:6]) and len(set(sessions[:6])) == 3  # whole, consecutive
    assert sessions[6:] == [s + 3 for s in sessions[:6]]  # the next pass: new sessions, same order
    for s in set(sessions[:6]):  # within one, every turn's prompt opens with the one before
        texts = [p.text or "" for p in prompts if p.session == s]
        assert all(b.startswith(a) for a, b in itertools.pairwise(texts))
    with pytest.raises(ValueError, match="arrival kind 'sessions' sends conversations turn by turn"):
        WorkloadSpec(
            num_requests=4, arrival={"kind": "sessions"}, dataset={"kind": "sharegpt", "path": str(path)}
        )


def _subword_tokenizer(path: Path) -> Path:
    """A small BPE tokenizer trained here (no download) that splits most words into several tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from tuner.loadgen.prompts import WORDS

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(
        [" ".join(WORDS)] * 5, trainers.BpeTrainer(vocab_size=120, special_tokens=["<unk>"])
    )
    tok.save(str(path / "tokenizer.json"))
    return path


def test_a_tokenizer_gives_prompts_of_exactly_their_length_in_its_tokens(tmp_path: Path) -> None:
    from tokenizers import Tokenizer

    folder = _subword_tokenizer(tmp_path)
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    for dataset in (None, {"kind": "shared_prefix", "groups": 2, "prefix_len": 40}):
        workload = WorkloadSpec(num_requests=5, input_len={"dist": "uniform", "low": 20, "high": 90},
                                tokenizer=str(folder), dataset=dataset)  # fmt: skip
        prompts = [p for p, _ in zip(make_prompts(workload), range(20), strict=False)]
        counts = [len(tok.encode(p.text or "", add_special_tokens=False).ids) for p in prompts]
        assert counts == [p.prompt_tokens for p in prompts]
        assert sum(len((p.text or "").split()) for p in prompts) < 0.7 * sum(counts)  # words != tokens here
    with pytest.raises(ConfigError, match=r"workload\.tokenizer: cannot load .*nowhere.*as a tokenizer"):
        from tuner.space.datasets import check_dataset

        check_dataset(WorkloadSpec(num_requests=1, tokenizer=str(tmp_path / "nowhere")), source="s.yaml")
