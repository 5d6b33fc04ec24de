"""Push a saved TempMe model folder or LoRA adapter folder to the Hugging Face Hub, with its model card.

    tempme push outputs/tempme-msrvtt --repo-id OWNER/tempme-vit-b-32-msrvtt \
        --base-model openai/clip-vit-base-patch32 --eval-json outputs/eval_msrvtt.json \
        --benchmark-json outputs/benchmark.json [--private] [--revision BRANCH]

A model folder goes up with config.json, safetensors weights and the remote code (configuration_tempme.py,
modeling_tempme.py, merging.py), and with its processor and pipeline when a processor was saved beside it (a
folder saved with `model.save_pretrained` + `processor.save_pretrained` gets the pipeline code and the
`custom_pipelines` entry of config.json added, and push says so), so that AutoProcessor and pipeline() load the
repo with transformers alone; an adapter folder with adapter_config.json, adapter_model.safetensors (and the TempMe
config.json, when it is there) and its processor. A `tempme train` output folder is taken as it is: the Trainer's
state, arguments (training_args.bin) and checkpoints stay behind. The card (README.md) is rendered from the JSON
files (see transformers_tempme.hub.model_card).

`--dry-run OUTDIR` writes the exact folder that would be uploaded and uploads nothing.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from huggingface_hub import create_branch, create_repo, upload_folder

from ..hub.model_card import add_card_arguments, card_from_arguments
from ..hub.repo_id import check_hub_reachable, check_repo_id, hub_request_errors
from ..hub.upload import files_left_behind, files_to_upload, pipeline_additions, stage_for_upload
from .common import command_parser, reports_user_errors


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = command_parser("push", __doc__)
    parser.add_argument("folder", help="saved model folder (config.json + weights + code) or peft adapter folder")
    parser.add_argument("--repo-id", required=True, help="Hub repo to push to, e.g. owner/tempme-vit-b-32-msrvtt")
    parser.add_argument("--private", action="store_true", help="create the repo as private")
    parser.add_argument("--revision", help="branch to push to (created if missing; default: main)")
    parser.add_argument("--commit-message", default="Upload TempMe model with its card")
    parser.add_argument("--dry-run", metavar="OUTDIR", help="write the folder that would be uploaded, upload nothing")
    add_card_arguments(parser)
    return parser.parse_args(argv)


def push(staged_dir: str, args: argparse.Namespace) -> str:
    """Create the repo (and branch) if needed and upload the staged folder as one commit; returns its URL.

    The Hub is asked once, with a short timeout, before anything is sent: an offline machine fails at once, and a
    request that fails later (network, permissions, authentication) is one error naming the repo.
    """
    check_hub_reachable(f"Pushing to {args.repo_id}")
    try:
        repo_url = create_repo(args.repo_id, private=args.private, exist_ok=True, repo_type="model")
        if args.revision:
            create_branch(args.repo_id, branch=args.revision, exist_ok=True, repo_type="model")
        upload_folder(
            repo_id=args.repo_id,
            folder_path=staged_dir,
            revision=args.revision,
            commit_message=args.commit_message,
            repo_type="model",
        )
    except hub_request_errors() as error:
        raise ConnectionError(
            f"Pushing to {args.repo_id} failed: {type(error).__name__}: {error}. Nothing is lost: the folder is as it "
            "was; run the same command again, or check `hf auth whoami` and your network."
        ) from error
    return str(repo_url)


@reports_user_errors
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    check_repo_id(args.repo_id)
    files_to_upload(args.folder)  # the folder's problems first: the card reads its files too
    card_from_arguments(args.folder, args.repo_id, args)  # and the card's inputs before anything is written
    left_behind = files_left_behind(args.folder)
    if left_behind:
        print(f"Not published (training state, other files): {', '.join(left_behind)}")
    additions = pipeline_additions(args.folder)
    if additions:
        print(f"Adding the pipeline the folder was saved without ({', '.join(additions)}), so that "
              "pipeline(model=..., trust_remote_code=True) loads the repo.")

    def render_card(staged: Path):
        return card_from_arguments(staged, args.repo_id, args)

    if args.dry_run:
        staged = stage_for_upload(args.folder, args.dry_run, render_card)
        print(f"Dry run: {len(staged)} files in {args.dry_run} would go to {args.repo_id}:")
        for path in staged:
            print(f"  {path.name}")
        return 0
    with tempfile.TemporaryDirectory() as staged_dir:
        stage_for_upload(args.folder, staged_dir, render_card)
        url = push(staged_dir, args)
    print(f"Pushed {args.folder} to {url}" + (f" (revision {args.revision})" if args.revision else ""))
    return 0
