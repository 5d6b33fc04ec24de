"""Export a TempMe model's video and text encoders to ONNX (merges included) and check them with onnxruntime.

    tempme export-onnx runs/msrvtt_vit_b32 onnx/msrvtt_vit_b32 --quantize
    tempme export-onnx runs/lora_adapter onnx/out --base-model openai/clip-vit-base-patch32

Writes `vision.onnx` (pixel_values, video_mask -> video_embeds, frame_embeds; dynamic batch, the config's frame
count) and `text.onnx` (input_ids, attention_mask -> text_embeds; dynamic batch and length), with `--quantize`
also `vision_int8.onnx` and `text_int8.onnx` (onnxruntime dynamic int8), plus `config.json` and
`onnx_export.json`. Before it finishes, the float32 graphs run in onnxruntime on random inputs and must match
PyTorch to `--atol`. Run them with `transformers_tempme.inference.onnx_export.OnnxTempMe(OUT_DIR)`.

MODEL is a saved TempMe model folder or Hub id, or a LoRA adapter folder (merged into `--base-model`, by default
the base the adapter records; bottleneck adapters and deep prompts cannot be merged and are refused). Needs `pip install "transformers-tempme[onnx]"`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .common import command_parser, load_model_option, reports_user_errors


def _missing_onnx_packages() -> list[str]:
    import importlib.util

    return [name for name in ("onnx", "onnxruntime", "onnxscript") if importlib.util.find_spec(name) is None]


@reports_user_errors
def main(argv: list[str] | None = None) -> int:
    parser = command_parser("export-onnx", __doc__)
    parser.add_argument("model", help="TempMe model folder or Hub id, or a LoRA adapter folder")
    parser.add_argument("output_dir", help="folder for the .onnx files (created)")
    parser.add_argument("--base-model", default=None, help="base model under a LoRA adapter (default: the recorded one)")
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset (at least 17)")
    parser.add_argument("--quantize", action="store_true", help="also write int8 graphs (onnxruntime dynamic quantization)")
    parser.add_argument("--atol", type=float, default=1e-4, help="largest accepted difference to PyTorch")
    parser.add_argument("--no-verify", action="store_true", help="skip the onnxruntime check against PyTorch")
    args = parser.parse_args(argv)

    missing = _missing_onnx_packages()
    if missing:
        print(
            f"error: ONNX export needs {', '.join(missing)}: pip install \"transformers-tempme[onnx]\"", file=sys.stderr
        )
        return 2
    if args.opset < 17:
        parser.error(f"--opset {args.opset} is too old: at least 17")

    import torch

    from ..inference.onnx_export import export_onnx

    model = load_model_option(args.model, args.base_model, merge=True).to("cpu", torch.float32).eval()
    print(f"Exporting {args.model} to {args.output_dir} (opset {args.opset}) ...", flush=True)
    result = export_onnx(model, args.output_dir, opset=args.opset, quantize=args.quantize, verify=not args.no_verify,
                         atol=args.atol)
    for name, file in result.files.items():
        print(f"  {name}: {Path(args.output_dir) / file}")
    if result.max_abs_diff:
        print(f"largest difference to PyTorch: {max(result.max_abs_diff.values()):.2e} (tolerance {args.atol:.0e})")
    print(json.dumps({"output_dir": result.output_dir, "files": result.files}))
    return 0
