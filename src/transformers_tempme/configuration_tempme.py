"""TempMe configuration: a `CLIPConfig` plus the temporal token-merging schedule.

The schedule fields follow the authors' command-line options:

- ImgMe runs in every vision block before the first ClipMe block and merges `img_merge_r` tokens per frame.
- ClipMe runs in the 0-indexed blocks `clip_merge_layers`; block `clip_merge_layers[i]` joins
  `clip_merge_groups[i]` adjacent clips into one, merges `1 - cross_clip_keep_ratio` of the joined tokens
  before attention and `1 - intra_clip_keep_ratio` of the rest after attention.
- Every later block that is not a ClipMe block runs intra-clip merging only.

This file is part of the remote code written next to saved models: it imports only `transformers` and
`huggingface_hub`.
"""

# No `from __future__ import annotations`: `@strict` checks field types only when the annotations are real types.
import contextvars
import copy
import difflib
from dataclasses import fields
from typing import Any, Iterable

from huggingface_hub.dataclasses import strict
from transformers import CLIPConfig, CLIPTextConfig, CLIPVisionConfig, PretrainedConfig
from transformers.utils import logging

from .merging import MergeStep, plan_merges

logger = logging.get_logger(__name__)

# The two OpenAI CLIP backbones used in the paper, and ViT-L/14. Everything not listed takes `CLIPConfig`'s
# defaults, which are the OpenAI ViT-B text tower (width 512, 12 layers) and a ViT-B vision tower (width 768, 12 layers).
_BACKBONES: dict[str, dict[str, Any]] = {
    "vit-b-32": {"vision_config": {"patch_size": 32}},
    "vit-b-16": {"vision_config": {"patch_size": 16}},
    # openai/clip-vit-large-patch14: 24 vision blocks of width 1024 on 14x14 patches (257 tokens per frame).
    "vit-l-14": {
        "vision_config": {
            "patch_size": 14,
            "hidden_size": 1024,
            "intermediate_size": 4096,
            "num_hidden_layers": 24,
            "num_attention_heads": 16,
        },
        "text_config": {"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12},
        "projection_dim": 768,
    },
}

# Merge schedules of the paper (Tables 1, 4, 5), written in this config's field names.
# ClipMe blocks are 0-indexed: the paper's "12 -(9)-> 6 -(10)-> 3 -(11)-> 1" is blocks [8, 9, 10].
_NO_MERGE = {"img_merge_r": 0, "clip_merge_layers": [], "clip_merge_groups": []}
_SCHEDULES: dict[str, dict[str, Any]] = {
    "tempme-vit-b-32": {
        "backbone": "vit-b-32",
        "num_frames": 12,
        "img_merge_r": 2,
        "clip_merge_layers": [8, 9, 10],
        "clip_merge_groups": [2, 2, 3],
        "cross_clip_keep_ratio": 0.7,
        "intra_clip_keep_ratio": 0.9,
    },
    "tempme-vit-b-16": {
        "backbone": "vit-b-16",
        "num_frames": 12,
        "img_merge_r": 10,
        "clip_merge_layers": [8, 9, 10],
        "clip_merge_groups": [2, 2, 3],
        "cross_clip_keep_ratio": 0.6,
        "intra_clip_keep_ratio": 0.8,
    },
    "tempme-vit-b-32-64f": {
        "backbone": "vit-b-32",
        "num_frames": 64,
        "img_merge_r": 2,
        "clip_merge_layers": [8, 9, 10],
        "clip_merge_groups": [4, 4, 4],
        "cross_clip_keep_ratio": 0.7,
        "intra_clip_keep_ratio": 0.9,
    },
    # ViT-L/14 (not in the paper), scaled from B/16 as the paper scales B/32 to B/16: with more tokens, merge more.
    # Each B/16 block stands for two L/14 blocks (24 instead of 12) and a frame has 256 patches instead of 196:
    # - ImgMe in the first 2/3 of the blocks (0-15) merges 7 tokens per block (10 x 256/196 / 2 = 6.5, rounded):
    #   112 of 256 patches per frame (44%), as B/16 merges 80 of 196 (41%);
    # - ClipMe at the same depths as B/16's 8, 9, 10: blocks 16, 18, 20, groups 2-2-3, R_C = 0.6;
    # - intra-clip merging runs in twice as many blocks (16-23), so R_I = 0.9, about sqrt(0.8) per block.
    # 12 frames then leave the encoder as 1 x 166 tokens, 5.4% of 12 x 257, as B/16's 127 are of 12 x 197.
    "tempme-vit-l-14": {
        "backbone": "vit-l-14",
        "num_frames": 12,
        "img_merge_r": 7,
        "clip_merge_layers": [16, 18, 20],
        "clip_merge_groups": [2, 2, 3],
        "cross_clip_keep_ratio": 0.6,
        "intra_clip_keep_ratio": 0.9,
    },
    # ToMe as the paper's tables use it: ImgMe in all 12 blocks, no ClipMe.
    "tome-vit-b-32": {"backbone": "vit-b-32", "num_frames": 12, **_NO_MERGE, "img_merge_r": 2},
    "tome-vit-b-16": {"backbone": "vit-b-16", "num_frames": 12, **_NO_MERGE, "img_merge_r": 10},
    "tome-vit-l-14": {"backbone": "vit-l-14", "num_frames": 12, **_NO_MERGE, "img_merge_r": 7},
    # No merging: frame-independent CLIP with a mean over frames (CLIP4Clip meanP / the paper's LoRA row).
    "clip-vit-b-32": {"backbone": "vit-b-32", "num_frames": 12, **_NO_MERGE},
    "clip-vit-b-16": {"backbone": "vit-b-16", "num_frames": 12, **_NO_MERGE},
    "clip-vit-l-14": {"backbone": "vit-l-14", "num_frames": 12, **_NO_MERGE},
}

PRESETS: tuple[str, ...] = tuple(_SCHEDULES)
# The schedule put on a plain CLIP checkpoint when none is named (the paper's ViT-B/32 setting).
DEFAULT_PRESET = "tempme-vit-b-32"

# The fields that make up a merge schedule (everything else describes the CLIP backbone).
SCHEDULE_FIELDS: tuple[str, ...] = (
    "num_frames",
    "img_merge_r",
    "clip_merge_layers",
    "clip_merge_groups",
    "cross_clip_keep_ratio",
    "intra_clip_keep_ratio",
    "proportional_attention",
    "clip_position_embedding",
    "clip_position_embedding_init_std",
)


# Keywords that `PretrainedConfig` and `CLIPConfig` take besides their fields, and keys `save_pretrained` writes.
_HF_KEYWORDS = frozenset(
    {
        "torch_dtype",
        "num_labels",
        "name_or_path",
        "output_attentions",
        "attn_implementation",
        "experts_implementation",
        "per_layer_config",
        "text_config_dict",
        "vision_config_dict",
        "model_type",
        "auto_map",
    }
)
# True while a saved config.json is read: files written by other versions may hold keys this one does not know,
# and they must keep loading (with a warning for keys that look like a misspelt schedule field).
_READING_SAVED_CONFIG = contextvars.ContextVar("tempme_reading_saved_config", default=False)


def did_you_mean(name: str, valid: Iterable[str]) -> str:
    """`" (did you mean 'x'?)"` with the valid name closest to `name`, or `""` when none is close."""
    by_case = {choice.lower(): choice for choice in valid}
    close = difflib.get_close_matches(name.lower(), list(by_case), n=1, cutoff=0.6)  # case does not count
    return f" (did you mean {by_case[close[0]]!r}?)" if close else ""


def unknown_names(unknown: Iterable[str], valid: Iterable[str]) -> str:
    """`'img_merge_R' (did you mean 'img_merge_r'?), 'foo'`: the unknown names, each with its closest valid one."""
    valid = list(valid)
    return ", ".join(f"{name!r}{did_you_mean(name, valid)}" for name in unknown)


def _field_names(config_class: type) -> list[str]:
    return [f.name for f in fields(config_class)]


def _unknown_keys(keys: Iterable[str], config_class: type) -> list[str]:
    """Keys that are neither fields of `config_class` nor keywords HF configs take (private keys are HF's)."""
    known = set(_field_names(config_class)) | _HF_KEYWORDS
    return [key for key in keys if key not in known and not key.startswith("_")]


def _merge_dicts(base: dict, overrides: dict) -> dict:
    """Recursive dict update that returns a new dict (sub-config dicts are merged key by key)."""
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge_dicts(merged[key], value)
        else:
            merged[key] = value
    return merged


@strict
class TempMeConfig(CLIPConfig):
    r"""
    Configuration of [`TempMeCLIPModel`]: a CLIP text and vision tower plus the TempMe merge schedule.

    Args:
        num_frames (`int`, defaults to 12):
            Frames per video the schedule is built for. Models without ClipMe blocks accept any frame count.
        img_merge_r (`int`, defaults to 2):
            Tokens merged per frame in every ImgMe block (every block before the first ClipMe block).
        clip_merge_layers (`list[int]`, defaults to `[8, 9, 10]`):
            0-indexed vision blocks that join clips and merge across them (ClipMe). Strictly increasing.
        clip_merge_groups (`list[int]`, defaults to `[2, 2, 3]`):
            Number of adjacent clips joined at each ClipMe block. Their product must divide `num_frames`.
        cross_clip_keep_ratio (`float`, defaults to 0.7):
            R_C: fraction of the joined tokens kept by the cross-clip merge of a ClipMe block.
        intra_clip_keep_ratio (`float`, defaults to 0.9):
            R_I: fraction of tokens kept by the intra-clip merge after attention (ClipMe blocks and every
            later block).
        proportional_attention (`bool`, defaults to `True`):
            Add log(token size) to every attention logit towards a merged token (ToMe's proportional attention).
        clip_position_embedding (`bool`, defaults to `True`):
            Learn one embedding per input clip of each ClipMe block, added before the cross-clip merge.
        clip_position_embedding_init_std (`float`, defaults to 0.0):
            Standard deviation of the clip position embeddings at initialisation. 0 is the paper's, for
            fine-tuning a pretrained CLIP; a small random start is an option for training from scratch.
    """

    model_type = "tempme"
    sub_configs_defaults = {"vision_config": CLIPVisionConfig, "text_config": CLIPTextConfig}

    num_frames: int = 12
    img_merge_r: int = 2
    clip_merge_layers: list[int] | tuple[int, ...] = (8, 9, 10)
    clip_merge_groups: list[int] | tuple[int, ...] = (2, 2, 3)
    cross_clip_keep_ratio: float | int = 0.7
    intra_clip_keep_ratio: float | int = 0.9
    proportional_attention: bool = True
    clip_position_embedding: bool = True
    clip_position_embedding_init_std: float | int = 0.0

    def __post_init__(self, **kwargs):
        # HF configs keep unknown keywords as attributes: a misspelt field would be written to config.json and the
        # default used instead. Refuse them, except in saved files (which other versions may have written).
        unknown = _unknown_keys(kwargs, type(self))
        if unknown and not _READING_SAVED_CONFIG.get():
            raise ValueError(
                f"TempMeConfig has no field {unknown_names(unknown, _field_names(type(self)))}. The merge schedule "
                f"fields are {', '.join(SCHEDULE_FIELDS)}; the backbone goes in vision_config / text_config."
            )
        for key in unknown:
            hint = did_you_mean(key, SCHEDULE_FIELDS)
            if hint:
                logger.warning(f"The saved config's key {key!r} is not a TempMeConfig field{hint}; it is ignored.")
        # Lists, not tuples, so that the config round-trips through JSON unchanged.
        self.clip_merge_layers = list(self.clip_merge_layers)
        self.clip_merge_groups = list(self.clip_merge_groups)
        super().__post_init__(**kwargs)

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs) -> "TempMeConfig":
        token = _READING_SAVED_CONFIG.set(True)
        try:
            return super().from_dict(config_dict, **kwargs)
        finally:
            _READING_SAVED_CONFIG.reset(token)

    @classmethod
    def from_json_file(cls, json_file) -> "TempMeConfig":
        token = _READING_SAVED_CONFIG.set(True)
        try:
            return super().from_json_file(json_file)
        finally:
            _READING_SAVED_CONFIG.reset(token)

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "TempMeConfig":
        """Build one of the paper's configurations (random-weight shapes of OpenAI CLIP ViT-B/32, B/16 or L/14).

        `overrides` replace schedule fields or, as dicts, update `vision_config` / `text_config` key by key, e.g.
        `TempMeConfig.from_preset("tempme-vit-b-32", vision_config={"num_hidden_layers": 4})`.
        """
        if name not in _SCHEDULES:
            raise ValueError(
                f"Unknown TempMe preset {name!r}{did_you_mean(name, PRESETS)}. Available presets: {', '.join(PRESETS)}."
            )
        for key, sub_config_class in (("vision_config", CLIPVisionConfig), ("text_config", CLIPTextConfig)):
            sub_overrides = overrides.get(key)
            unknown = _unknown_keys(sub_overrides, sub_config_class) if isinstance(sub_overrides, dict) else []
            if unknown:
                own_fields = [name for name in _field_names(sub_config_class) if name not in _field_names(PretrainedConfig)]
                raise ValueError(
                    f"{key} has no field {unknown_names(unknown, _field_names(sub_config_class))} "
                    f"({sub_config_class.__name__}'s fields are {', '.join(own_fields)})."
                )
        schedule = dict(_SCHEDULES[name])
        backbone = _BACKBONES[schedule.pop("backbone")]
        return cls(**_merge_dicts({**backbone, **schedule}, overrides))

    @property
    def merge_schedule(self) -> dict[str, Any]:
        """The schedule fields alone, e.g. to put one model's schedule on another backbone."""
        return {name: copy.deepcopy(getattr(self, name)) for name in SCHEDULE_FIELDS}

    def merge_plan(self, num_frames: int | None = None, clip_merging: bool = True) -> tuple[MergeStep, ...]:
        """What every vision block does for videos of `num_frames` frames (default: `self.num_frames`).

        `clip_merging=False` is the frame-level plan (for single images): no clips are joined and nothing is merged
        across frames; ClipMe blocks and the blocks after them merge within the frame at `intra_clip_keep_ratio`.
        """
        # The schedule may have been edited since the config was built: check it again before it is used.
        self.validate_merge_schedule()
        groups = self.clip_merge_groups if clip_merging else [1] * len(self.clip_merge_layers)
        return plan_merges(
            num_layers=self.vision_config.num_hidden_layers,
            tokens_per_frame=self.tokens_per_frame,
            num_frames=self.num_frames if num_frames is None else num_frames,
            img_merge_r=self.img_merge_r,
            clip_merge_layers=self.clip_merge_layers,
            clip_merge_groups=groups,
            cross_clip_keep_ratio=self.cross_clip_keep_ratio if clip_merging else 1.0,
            intra_clip_keep_ratio=self.intra_clip_keep_ratio,
        )

    @property
    def has_clip_merging(self) -> bool:
        return len(self.clip_merge_layers) > 0

    @property
    def tokens_per_frame(self) -> int:
        """Tokens per frame entering the vision encoder: the patch grid plus one CLS token."""
        image_size, patch_size = self.vision_config.image_size, self.vision_config.patch_size
        return (image_size // patch_size) ** 2 + 1

    def validate_merge_schedule(self):
        """Part of `@strict`-powered validation: the schedule must fit the vision tower and the frame count."""
        num_layers = self.vision_config.num_hidden_layers
        layers, groups = list(self.clip_merge_layers), list(self.clip_merge_groups)
        # `@strict` checks a field's type when it is set; this catches elements put into the lists afterwards.
        integers = {"num_frames": [self.num_frames], "img_merge_r": [self.img_merge_r], "clip_merge_layers": layers,
                    "clip_merge_groups": groups}
        for name, values in integers.items():
            if any(isinstance(value, bool) or not isinstance(value, int) for value in values):
                kind = "a list of integers" if name.startswith("clip_merge") else "an integer"
                raise TypeError(f"{name} must be {kind}, got {getattr(self, name)!r}.")
        for name in ("cross_clip_keep_ratio", "intra_clip_keep_ratio"):
            if isinstance(getattr(self, name), bool) or not isinstance(getattr(self, name), (int, float)):
                raise TypeError(f"{name} must be a number in (0, 1], got {getattr(self, name)!r}.")
        if self.num_frames < 1:
            raise ValueError(f"num_frames must be at least 1, got {self.num_frames}.")
        if self.img_merge_r < 0:
            raise ValueError(f"img_merge_r must be >= 0, got {self.img_merge_r}.")
        if len(layers) != len(groups):
            raise ValueError(
                f"clip_merge_layers ({layers}) and clip_merge_groups ({groups}) must have the same length: "
                "one group size per ClipMe block."
            )
        if any(not 0 <= layer < num_layers for layer in layers):
            raise ValueError(
                f"clip_merge_layers {layers} must be 0-indexed vision blocks in [0, {num_layers - 1}]; "
                f"the paper's 1-indexed '(9), (10), (11)' are blocks [8, 9, 10]."
            )
        if any(later <= earlier for earlier, later in zip(layers, layers[1:])):
            raise ValueError(f"clip_merge_layers must be strictly increasing, got {layers}.")
        if any(group < 1 for group in groups):
            raise ValueError(f"clip_merge_groups must be positive integers, got {groups}.")
        for name in ("cross_clip_keep_ratio", "intra_clip_keep_ratio"):
            ratio = getattr(self, name)
            if not 0 < ratio <= 1:
                raise ValueError(f"{name} must be in (0, 1], got {ratio}.")
        first_clip_layer = layers[0] if layers else num_layers
        patches = self.tokens_per_frame - 1
        if self.img_merge_r > 0:
            remaining = patches
            for block in range(first_clip_layer):
                if self.img_merge_r > remaining // 2:
                    raise ValueError(
                        f"img_merge_r={self.img_merge_r} is more than half of the {remaining} patch tokens left "
                        f"in ImgMe block {block}; bipartite matching can merge at most half. Lower img_merge_r."
                    )
                remaining -= self.img_merge_r
        # The frame count through the clip groups: checked where the plan is made, for any frame count.
        plan_merges(
            num_layers=num_layers,
            tokens_per_frame=self.tokens_per_frame,
            num_frames=self.num_frames,
            img_merge_r=self.img_merge_r,
            clip_merge_layers=layers,
            clip_merge_groups=groups,
            cross_clip_keep_ratio=self.cross_clip_keep_ratio,
            intra_clip_keep_ratio=self.intra_clip_keep_ratio,
        )


__all__ = ["TempMeConfig", "PRESETS", "DEFAULT_PRESET", "SCHEDULE_FIELDS"]
