"""Run the authors' TempMe implementation (a local checkout of LunarShen/TempMe) on the weights of one of our models.

The benchmark times our `encode_video` against the authors' `VTRModel.get_video_feat` with the same weights and the
same inputs. Their code is not a dependency of this project: point `--authors-code` at a checkout of it and this
module imports its `tvr.models.modeling` from there.

Their model is OpenAI's CLIP layout (a fused `in_proj_weight` per attention, `c_fc` / `c_proj` MLPs, `(in, out)`
projection matrices), with a LoRA branch (`TVPt_LoRA_a/b`, `b` zero at initialisation, so it adds nothing) and one
`TVPt_Video_Positional_embedding` per ClipMe block. `openai_state_dict` writes our weights in that layout: q, k and v
stacked into `in_proj_weight`, the projections transposed, the clip position embeddings reshaped. `VTRModel` loads
its weights from `pretrained_path/ViT-B-32.pt` (or `ViT-B-16.pt`), so the state dict goes to a temporary folder.

Their text and ClipMe modules import `timm` for `drop_path`, which neither path uses at inference; when timm is not
installed (it pulls torchvision, which this project avoids), a stand-in module that only defines `drop_path` is
registered under its name before their code is imported.
"""

from __future__ import annotations

import importlib
import sys
import tempfile
import types
from pathlib import Path
from types import SimpleNamespace

import torch

from transformers_tempme import TempMeCLIPModel

BACKBONE_NAMES = {32: "ViT-B/32", 16: "ViT-B/16"}
CHECKPOINT_NAMES = {"ViT-B/32": "ViT-B-32.pt", "ViT-B/16": "ViT-B-16.pt"}


class AuthorsCodeError(RuntimeError):
    """The checkout cannot run this model (not the authors' code, or a schedule their code cannot express)."""


def check_checkout(path: Path) -> Path:
    path = Path(path).expanduser().resolve()
    if not (path / "tvr" / "models" / "modeling.py").is_file():
        raise AuthorsCodeError(
            f"{path} is not a checkout of the authors' TempMe code (no tvr/models/modeling.py). Clone "
            "https://github.com/LunarShen/TempMe and pass its folder to --authors-code."
        )
    return path


def _install_timm_stand_in() -> None:
    try:
        importlib.import_module("timm.models.layers")
        return
    except ImportError:
        pass

    def drop_path(x, drop_prob: float = 0.0, training: bool = False):
        if drop_prob == 0.0 or not training:
            return x
        raise NotImplementedError("stochastic depth is not available without timm")

    timm, models, layers = (types.ModuleType(name) for name in ("timm", "timm.models", "timm.models.layers"))
    layers.drop_path = drop_path
    timm.models, models.layers = models, layers
    sys.modules.update({"timm": timm, "timm.models": models, "timm.models.layers": layers})


def import_modeling(path: Path):
    """The authors' `tvr.models.modeling` module, imported from the checkout at `path`."""
    path = check_checkout(path)
    _install_timm_stand_in()
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
    return importlib.import_module("tvr.models.modeling")


def authors_arguments(model: TempMeCLIPModel) -> SimpleNamespace:
    """The command-line options of their `main.py` that describe `model`'s schedule."""
    config = model.config
    vision = config.vision_config
    backbone = BACKBONE_NAMES.get(vision.patch_size)
    if (
        backbone is None
        or vision.hidden_size != 768
        or vision.num_hidden_layers != 12
        or vision.image_size != 224
        or config.text_config.hidden_size != 512
    ):
        raise AuthorsCodeError("The authors' code builds only the OpenAI ViT-B/32 and ViT-B/16 shapes.")
    if not config.clip_merge_layers:
        raise AuthorsCodeError("The authors' code needs at least one ClipMe block (it cannot run no-merge or ToMe).")
    percent = [round(100 * (1 - config.cross_clip_keep_ratio)), round(100 * (1 - config.intra_clip_keep_ratio))]
    return SimpleNamespace(
        base_encoder=backbone,
        pretrained_path="",
        lora_dim=8,
        max_frames=config.num_frames,
        merge_layer="-".join(str(layer) for layer in config.clip_merge_layers),
        merge_frame_num="-".join(str(group) for group in config.clip_merge_groups),
        merge_token_proportion=f"{percent[0]}-{percent[1]}",
        frame_pos=1 if config.clip_position_embedding else 0,
        tome_r=config.img_merge_r,
        tome_tracesource=False,
        tome_propattn=config.proportional_attention,
    )


def _attention_block(prefix: str, ours: dict[str, torch.Tensor], theirs: str) -> dict[str, torch.Tensor]:
    """One encoder block of ours (HF CLIP names under `prefix`) in OpenAI's names under `theirs`."""
    out = {}
    attention = f"{prefix}.self_attn"
    out[f"{theirs}.attn.in_proj_weight"] = torch.cat([ours[f"{attention}.{p}_proj.weight"] for p in "qkv"])
    out[f"{theirs}.attn.in_proj_bias"] = torch.cat([ours[f"{attention}.{p}_proj.bias"] for p in "qkv"])
    for kind in ("weight", "bias"):
        out[f"{theirs}.attn.out_proj.{kind}"] = ours[f"{attention}.out_proj.{kind}"]
        out[f"{theirs}.ln_1.{kind}"] = ours[f"{prefix}.layer_norm1.{kind}"]
        out[f"{theirs}.ln_2.{kind}"] = ours[f"{prefix}.layer_norm2.{kind}"]
        out[f"{theirs}.mlp.c_fc.{kind}"] = ours[f"{prefix}.mlp.fc1.{kind}"]
        out[f"{theirs}.mlp.c_proj.{kind}"] = ours[f"{prefix}.mlp.fc2.{kind}"]
    return out


def openai_state_dict(model: TempMeCLIPModel) -> dict[str, torch.Tensor]:
    """`model`'s weights in the layout of the authors' `CLIP` (OpenAI's), ClipMe position embeddings included."""
    ours = {name: tensor.detach().float().clone() for name, tensor in model.state_dict().items()}
    config = model.config
    out = {
        "visual.conv1.weight": ours["vision_model.embeddings.patch_embedding.weight"],
        "visual.class_embedding": ours["vision_model.embeddings.class_embedding"],
        "visual.positional_embedding": ours["vision_model.embeddings.position_embedding.weight"],
        "visual.proj": ours["visual_projection.weight"].t().contiguous(),
        "token_embedding.weight": ours["text_model.embeddings.token_embedding.weight"],
        "positional_embedding": ours["text_model.embeddings.position_embedding.weight"],
        "text_projection": ours["text_projection.weight"].t().contiguous(),
        "logit_scale": ours["logit_scale"],
    }
    for kind in ("weight", "bias"):
        out[f"visual.ln_pre.{kind}"] = ours[f"vision_model.pre_layrnorm.{kind}"]
        out[f"visual.ln_post.{kind}"] = ours[f"vision_model.post_layernorm.{kind}"]
        out[f"ln_final.{kind}"] = ours[f"text_model.final_layer_norm.{kind}"]
    for i in range(config.vision_config.num_hidden_layers):
        prefix = f"vision_model.encoder.layers.{i}"
        out.update(_attention_block(prefix, ours, f"visual.transformer.resblocks.{i}"))
        clip_embedding = ours.get(f"{prefix}.clip_position_embedding.weight")
        if clip_embedding is not None:
            clips, width = clip_embedding.shape
            out[f"visual.transformer.resblocks.{i}.TVPt_Video_Positional_embedding"] = clip_embedding.view(
                1, clips, 1, width
            )
    for i in range(config.text_config.num_hidden_layers):
        out.update(_attention_block(f"text_model.encoder.layers.{i}", ours, f"transformer.resblocks.{i}"))
    return out


class AuthorsTempMe:
    """The authors' `VTRModel` holding `model`'s weights, with our calling convention for videos and texts."""

    def __init__(self, checkout: Path, model: TempMeCLIPModel):
        modeling = import_modeling(checkout)
        arguments = authors_arguments(model)
        state_dict = openai_state_dict(model)
        with tempfile.TemporaryDirectory() as folder:
            arguments.pretrained_path = folder
            torch.save(state_dict, Path(folder) / CHECKPOINT_NAMES[arguments.base_encoder])
            self.model = modeling.VTRModel(arguments).eval()
        # Their loader uses strict=False: check that every weight we wrote was taken.
        loaded = self.model.clip.state_dict()
        for name, tensor in state_dict.items():
            if name not in loaded or not torch.equal(loaded[name], tensor):
                raise AuthorsCodeError(f"The authors' model did not take the weight {name}.")
        self.model.to(dtype=model.dtype)

    @torch.inference_mode()
    def encode_video(self, pixel_values: torch.Tensor, video_mask: torch.Tensor | None = None) -> torch.Tensor:
        """`(batch, frames, 3, H, W)` -> video embeddings `(batch, projection_dim)` (their `get_video_feat`)."""
        batch, frames = pixel_values.shape[:2]
        if video_mask is None:
            video_mask = torch.ones(batch, frames, dtype=torch.long, device=pixel_values.device)
        return self.model.get_video_feat(pixel_values.flatten(0, 1), video_mask)

    @torch.inference_mode()
    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """`(batch, words)` -> text embeddings `(batch, projection_dim)` (their `get_text_feat`, not normalised)."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        return self.model.get_text_feat(input_ids, attention_mask)


__all__ = ["AuthorsCodeError", "AuthorsTempMe", "authors_arguments", "check_checkout", "openai_state_dict"]
