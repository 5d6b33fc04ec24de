"""Model cards are rendered from the evaluation/benchmark JSON and the config alone, and say how to load the model."""

from __future__ import annotations

import copy
import json
import re

import pytest
from hub_card_checks import (
    BENCHMARK,
    BENCHMARK_COMMAND,
    EVALUATION,
    NUMBER,
    numbers_not_from_sources,
    source_numbers,
    write_inputs,
)
from conftest import tiny_model
from safetensors.torch import load_file

from transformers_tempme import apply_lora, save_adapter
from transformers_tempme.hub.model_card import (
    DEFAULT_TEMPLATE,
    BENCHMARK_REQUIRED_KEYS,
    EVAL_REQUIRED_KEYS,
    RETRIEVAL_METRICS,
    CardInputError,
    card_for_folder,
    load_benchmark,
    load_evaluation,
)

BASE_MODEL = "openai/clip-vit-base-patch32"


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    tiny_model().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def adapter_folder(model_folder, tmp_path_factory):
    from transformers_tempme import TempMeCLIPModel

    folder = tmp_path_factory.mktemp("adapter")
    save_adapter(apply_lora(TempMeCLIPModel.from_pretrained(model_folder)), folder)
    return folder


def weights_elements(path) -> int:
    return sum(tensor.numel() for tensor in load_file(path).values())


def test_template_has_no_hand_typed_numbers():
    template = DEFAULT_TEMPLATE.read_text()
    prose = re.sub(r"{{.*?}}|{%.*?%}", "", template, flags=re.DOTALL)
    assert NUMBER.findall(prose) == []


def test_every_number_in_a_model_card_comes_from_the_inputs(model_folder, tmp_path):
    eval_path, bench_path = write_inputs(tmp_path)
    card = card_for_folder(
        model_folder, "owner/tempme-tiny", [eval_path], bench_path, benchmark_command=BENCHMARK_COMMAND,
        base_model=BASE_MODEL,
    )
    text = str(card)
    config = json.loads((model_folder / "config.json").read_text())
    sources = source_numbers(EVALUATION, BENCHMARK, BENCHMARK_COMMAND, config)
    sources.append(weights_elements(model_folder / "model.safetensors"))
    assert numbers_not_from_sources(text, sources) == []
    # The card shows the results, not only something consistent with them.
    for value in ("44.54", "13.46", "9.75", "4.99", "123", "53.71", "35.25", "1000"):
        assert value in text
    assert EVALUATION["command"] in text and BENCHMARK_COMMAND in text


def test_model_index_holds_both_directions_gflops_and_tokens(model_folder, tmp_path):
    eval_path, _ = write_inputs(tmp_path)
    card = card_for_folder(model_folder, "owner/tempme-tiny", [eval_path], base_model=BASE_MODEL)
    results = card.data.eval_results
    assert len(results) == 2 * len(RETRIEVAL_METRICS) + 2
    assert {r.task_type for r in results} == {"text-to-video-retrieval"}
    assert {r.task_name for r in results} == {"Text-to-Video Retrieval"}
    assert {(r.dataset_name, r.dataset_type, r.dataset_split) for r in results} == {("msrvtt", "msrvtt", "test-1k")}
    values = {r.metric_name: r.metric_value for r in results}
    for metric in RETRIEVAL_METRICS:
        assert values[f"Text-to-video {metric}"] == EVALUATION["text_to_video"][metric]
        assert values[f"Video-to-text {metric}"] == EVALUATION["video_to_text"][metric]
    assert values["Vision GFLOPs per video"] == EVALUATION["gflops"]
    assert values["Output tokens per video"] == EVALUATION["output_tokens"]
    assert card.data.base_model == BASE_MODEL


def test_model_card_states_base_schedule_and_remote_code_loading(model_folder):
    text = str(card_for_folder(model_folder, "owner/tempme-tiny", base_model=BASE_MODEL))
    config = json.loads((model_folder / "config.json").read_text())
    assert f"**Base model:** `{BASE_MODEL}`" in text
    assert f"ClipMe blocks (counted from zero): {', '.join(map(str, config['clip_merge_layers']))}" in text
    assert f"**Frames per video:** {config['num_frames']}" in text
    assert 'AutoModel.from_pretrained("owner/tempme-tiny", trust_remote_code=True)' in text
    assert "PeftModel" not in text


def test_adapter_card_counts_trainable_parameters_and_loads_with_peft(adapter_folder, model_folder, tmp_path):
    eval_path, _ = write_inputs(tmp_path)
    card = card_for_folder(adapter_folder, "owner/tempme-tiny-lora", [eval_path])
    text = str(card)
    trainable = weights_elements(adapter_folder / "adapter_model.safetensors")
    assert f"**Trainable parameters:** {trainable}" in text
    assert f'AutoModel.from_pretrained("{model_folder}", trust_remote_code=True)' in text
    assert 'PeftModel.from_pretrained(base, "owner/tempme-tiny-lora")' in text
    adapter_config = json.loads((adapter_folder / "adapter_config.json").read_text())
    config = json.loads((model_folder / "config.json").read_text())
    assert numbers_not_from_sources(text, source_numbers(EVALUATION, config, adapter_config) + [trainable]) == []
    assert card.data.library_name == "peft"
    assert card.data.base_model is None  # a local folder is not a Hub id


@pytest.mark.parametrize("key", EVAL_REQUIRED_KEYS)
def test_evaluation_without_a_required_key_is_refused_by_name(tmp_path, key):
    evaluation = copy.deepcopy(EVALUATION)
    del evaluation[key]
    (tmp_path / "eval.json").write_text(json.dumps(evaluation))
    with pytest.raises(CardInputError, match=f"missing key '{key}'"):
        load_evaluation(tmp_path / "eval.json")


@pytest.mark.parametrize("direction", ["text_to_video", "video_to_text"])
@pytest.mark.parametrize("metric", RETRIEVAL_METRICS)
def test_evaluation_without_a_metric_is_refused_by_name(tmp_path, direction, metric):
    evaluation = copy.deepcopy(EVALUATION)
    del evaluation[direction][metric]
    (tmp_path / "eval.json").write_text(json.dumps(evaluation))
    with pytest.raises(CardInputError, match=re.escape(f"missing key '{direction}' -> '{metric}'")):
        load_evaluation(tmp_path / "eval.json")


def test_evaluation_without_a_command_needs_one_from_the_caller(tmp_path):
    evaluation = {key: value for key, value in EVALUATION.items() if key != "command"}
    (tmp_path / "eval.json").write_text(json.dumps(evaluation))
    with pytest.raises(CardInputError, match="--eval-command"):
        load_evaluation(tmp_path / "eval.json")
    assert load_evaluation(tmp_path / "eval.json", command="make eval")["command"] == "make eval"


@pytest.mark.parametrize("key", BENCHMARK_REQUIRED_KEYS)
def test_benchmark_record_without_a_required_key_is_refused_by_name(tmp_path, key):
    records = copy.deepcopy(BENCHMARK)
    del records[1][key]
    (tmp_path / "bench.json").write_text(json.dumps(records))
    with pytest.raises(CardInputError, match=f"record 1 is missing key '{key}'"):
        load_benchmark(tmp_path / "bench.json", command=BENCHMARK_COMMAND)


def test_benchmark_command_comes_from_the_json_when_recorded(tmp_path):
    (tmp_path / "bench.json").write_text(json.dumps({"records": BENCHMARK, "command": BENCHMARK_COMMAND, "device": "cpu"}))
    benchmark = load_benchmark(tmp_path / "bench.json")
    assert benchmark["command"] == BENCHMARK_COMMAND and benchmark["device"] == "cpu"
    (tmp_path / "bench.json").write_text(json.dumps(BENCHMARK))
    with pytest.raises(CardInputError, match="--benchmark-command"):
        load_benchmark(tmp_path / "bench.json")


def test_card_needs_a_base_model(model_folder):
    with pytest.raises(CardInputError, match="--base-model"):
        card_for_folder(model_folder, "owner/tempme-tiny")


def test_render_script_writes_the_card(model_folder, tmp_path):
    from transformers_tempme.cli import card as render

    eval_path, bench_path = write_inputs(tmp_path)
    output = tmp_path / "README.md"
    argv = [str(model_folder), "--repo-id", "owner/tempme-tiny", "--base-model", BASE_MODEL, "--eval-json",
            str(eval_path), "--benchmark-json", str(bench_path), "--benchmark-command", BENCHMARK_COMMAND,
            "-o", str(output)]
    assert render.main(argv) == 0
    assert "## Evaluation" in output.read_text() and "## Efficiency" in output.read_text()
    assert render.main(argv[:-2] + ["--eval-json", str(bench_path)]) == 2


SYNTHETIC = {"dataset": "synthetic-temporal", "synthetic": True, "annotation_layout": "msrvtt"}
DATASET_FIELDS = [
    # the evaluation's dataset fields, the model index's (name, type), the card's datasets, the synthetic note
    ({"dataset": "msrvtt"}, ("msrvtt", "msrvtt"), ["msrvtt"], False),
    (SYNTHETIC, ("synthetic-temporal", "synthetic-temporal"), None, True),
    ({"dataset": "msrvtt", "synthetic": True}, ("msrvtt (synthetic)", "msrvtt"), None, True),
    ({"dataset": "didemo", "synthetic": False}, ("didemo", "didemo"), ["didemo"], False),
]


@pytest.mark.parametrize("fields, index_dataset, datasets, synthetic", DATASET_FIELDS)
def test_the_dataset_comes_from_the_evaluation_and_synthetic_results_say_so(
    model_folder, tmp_path, fields, index_dataset, datasets, synthetic
):
    evaluation = {**{k: v for k, v in EVALUATION.items() if k != "dataset"}, **fields}
    eval_path = tmp_path / "eval.json"
    eval_path.write_text(json.dumps(evaluation))
    card = card_for_folder(model_folder, "owner/tempme-tiny", [eval_path], base_model=BASE_MODEL)
    text = str(card)
    assert {(r.dataset_name, r.dataset_type) for r in card.data.eval_results} == {index_dataset}
    assert card.data.datasets == datasets
    assert f"### {index_dataset[0]} ({EVALUATION['split']})" in text
    assert ("Synthetic data: generated videos, not a public benchmark" in text) == synthetic
    assert ("annotations in the msrvtt layout" in text) == ("annotation_layout" in fields)
    config = json.loads((model_folder / "config.json").read_text())
    sources = source_numbers(evaluation, config) + [weights_elements(model_folder / "model.safetensors")]
    assert numbers_not_from_sources(text, sources) == []


def test_synthetic_must_be_true_or_false(tmp_path):
    eval_path = tmp_path / "eval.json"
    eval_path.write_text(json.dumps({**EVALUATION, "synthetic": "yes"}))
    with pytest.raises(CardInputError, match=r"eval\.json: 'synthetic' must be true or false, got 'yes'"):
        load_evaluation(eval_path)


@pytest.mark.parametrize(
    "folder, repo_id, message",
    [
        (lambda root, model: root / "videos", "owner/m", r"videos is not a model folder: it has no config\.json"),
        (lambda root, model: root / "missing", "owner/m", r"No such folder: .*missing"),
        (lambda root, model: model / "config.json", "owner/m", r"config\.json is a file, not a model folder"),
        (lambda root, model: model, "me/bad name!!", r"--repo-id 'me/bad name!!' is not a valid Hub repo id"),
    ],
    ids=["not-a-model-folder", "missing", "a-file", "bad-repo-id"],
)
def test_card_on_what_is_not_a_model_folder_is_one_error_line(model_folder, tmp_path, capsys, folder, repo_id, message):
    from transformers_tempme.cli import main

    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "clip.mp4").write_bytes(b"")
    assert main(["card", str(folder(tmp_path, model_folder)), "--repo-id", repo_id, "--base-model", BASE_MODEL]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and re.search(message, lines[0]), err
