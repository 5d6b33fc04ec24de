"""Render the model card (README.md) of a saved TempMe model or adapter folder from evaluation/benchmark JSON.

    tempme card FOLDER --repo-id OWNER/NAME --base-model openai/clip-vit-base-patch32 \
        --eval-json outputs/eval_msrvtt.json --benchmark-json outputs/benchmark.json -o FOLDER/README.md

Every number in the card comes from the JSON files, the folder's config.json or its weights; see
`transformers_tempme.hub.model_card` for the JSON shapes it reads.
"""

from __future__ import annotations

from pathlib import Path

from ..hub.model_card import add_card_arguments, card_from_arguments
from ..hub.repo_id import check_model_folder, check_repo_id
from .common import command_parser, reports_user_errors


@reports_user_errors
def main(argv: list[str] | None = None) -> int:
    parser = command_parser("card", __doc__)
    parser.add_argument("folder", help="saved model folder (config.json + weights) or peft adapter folder")
    parser.add_argument("--repo-id", required=True, help="Hub repo the card is for, e.g. owner/tempme-vit-b-32-msrvtt")
    parser.add_argument("-o", "--output", help="where to write the card (default: print it)")
    add_card_arguments(parser)
    args = parser.parse_args(argv)
    check_repo_id(args.repo_id)
    check_model_folder(args.folder)
    card = card_from_arguments(args.folder, args.repo_id, args)
    if args.output:
        Path(args.output).write_text(str(card))
    else:
        print(card)
    return 0

