"""`optimize_for_inference`: a trained TempMe model with its blocks' kernels swapped for fast ones at a precision.

    from transformers_tempme import optimize_for_inference

    fast = optimize_for_inference(model, precision="fp32")  # or "bf16", "int8"
    video_embeds = fast.encode_video(pixel_values).video_embeds
    text_embeds = fast.get_text_features(input_ids=input_ids, attention_mask=attention_mask).pooler_output

The result is a `TempMeCLIPModel`, a copy of `model` (or `model` itself with `inplace=True`) in which, as peft's
`replace_module` or torchao's `quantize_` do, submodules are swapped in place:

- every attention of both towers (`TempMeVisionAttention`, `CLIPAttention`) -> `FusedQKVAttention` (one q/k/v matmul),
- every MLP (`CLIPMLP`) -> `InferenceMLP` (quick-GELU folded into a fused SiLU),
- the patch embedding (`CLIPVisionEmbeddings`) -> `InferencePatchEmbeddings` (a matmul over the flattened patches),

each holding weights prepared at the precision (`towers=("text",)` swaps those of the text tower only, as video search
does to encode queries; the vision tower's weights are then shared with `model`, not copied). Everything else (layer norms, clip position embeddings, projections,
the merging, the forward itself) is the model's own: the copy runs the same `encode_video`, `get_text_features`,
`get_image_features` and `forward`. The attention kernel stays the model's `attn_implementation` (transformers'
registry), or the one given. Bottleneck adapters run as they are around the prepared MLP; parameters in modules the
fast path does not know (deep prompts, unmerged LoRA) are refused, never silently left out. Prepare the model again
after its weights change.

`optimize_for_inference(model, precision, compile=True)` takes the other road to speed: nothing is swapped, and the
copy's vision tower is compiled whole by `torch.compile` (inductor, `fullgraph=True`: the merge plan is static, so the
tower is one graph per frame count) at the precision (`"fp32"`, or `"bf16"`: the blocks' weights and tokens in
bfloat16, the final layer norm and projections at the model's precision). Inductor fuses what the prepared modules
fuse by hand, and more; its first forward for each input shape compiles (minutes on a CPU). Inductor cannot compile
the prepared modules' oneDNN and int8 kernels, so the two roads do not combine.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Sequence

import torch
from torch import nn
from transformers.models.clip.modeling_clip import CLIPAttention, CLIPMLP, CLIPVisionEmbeddings

from ..modeling_tempme import ClipPositionEmbedding, TempMeCLIPModel, TempMeVisionAttention
from .cpu_features import cpu_features
from .linear import PRECISIONS, InferenceLinear, InferenceMLP, compute_dtype
from .modules import FusedQKVAttention, InferencePatchEmbeddings


def _prepare_mlp(mlp: nn.Module, precision: str, reduce_range: bool) -> InferenceMLP:
    return InferenceMLP(mlp, mlp.config.hidden_act, precision, reduce_range)


# What each module is swapped for, by exact type: `(module, precision, reduce_range) -> prepared module`.
PREPARED_MODULES: dict[type[nn.Module], Callable[[nn.Module, str, bool], nn.Module]] = {
    TempMeVisionAttention: FusedQKVAttention,
    CLIPAttention: FusedQKVAttention,
    CLIPMLP: _prepare_mlp,
    CLIPVisionEmbeddings: InferencePatchEmbeddings,
}
# Modules with weights that run as they are, at the model's precision.
KEPT_MODULES: tuple[type[nn.Module], ...] = (nn.LayerNorm, nn.Embedding, ClipPositionEmbedding)
# Children a swapped module may have: its weights are read from these, so anything else (a LoRA layer around a
# projection, say) would be left out.
PLAIN_CHILDREN: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv2d, nn.Embedding)
# The towers `optimize_for_inference` can prepare, by the name it takes, and the prefix of their modules' names.
TOWERS: dict[str, str] = {"vision": "vision_model.", "text": "text_model."}


def preparer(module: nn.Module) -> Callable[[nn.Module, str, bool], nn.Module] | None:
    """What `module` is swapped for, or `None` when it is not swapped (unknown type, or a child that is not plain)."""
    prepare = PREPARED_MODULES.get(type(module))
    if prepare is None:
        return None
    plain = all(type(child) in PLAIN_CHILDREN or next(child.parameters(), None) is None for child in module.children())
    return prepare if plain else None


def unsupported_parameters(model: TempMeCLIPModel) -> list[str]:
    """Names of the parameters the fast path neither prepares nor can run as they are (empty when it runs `model`)."""
    from ..tuners.adapter import HoulsbyAdapter  # runs as it is, on the prepared MLP's output

    handled = {id(model.logit_scale)}
    handled.update(id(p) for projection in (model.visual_projection, model.text_projection) for p in projection.parameters())
    for module in model.modules():
        if preparer(module) is not None or isinstance(module, (*KEPT_MODULES, HoulsbyAdapter)):
            handled.update(id(parameter) for parameter in module.parameters())
    return [name for name, parameter in model.named_parameters() if id(parameter) not in handled]


def _unwrap(model: nn.Module) -> TempMeCLIPModel:
    """The TempMe model inside `model`: a `TempMeCLIPModel`, or the base model of a tuner of this package."""
    from ..tuners.tuner_model import TempMeTunerModel

    if isinstance(model, TempMeTunerModel):
        model = model.get_base_model()
    if isinstance(model, TempMeCLIPModel):
        return model
    if hasattr(model, "merge_and_unload") and hasattr(model, "get_base_model"):
        raise ValueError(
            "optimize_for_inference needs the plain model, not a peft model with adapters: merge them first with "
            "`model = model.merge_and_unload()` (load_tempme(..., merge=True) does this when loading an adapter)."
        )
    raise TypeError(f"optimize_for_inference expects a TempMeCLIPModel, got {type(model).__name__}.")


def _in_towers(name: str, prefixes: tuple[str, ...]) -> bool:
    return name.startswith(prefixes)


def _check_preparable(model: TempMeCLIPModel, prefixes: tuple[str, ...]) -> None:
    if any(isinstance(module, InferenceLinear) for module in model.modules()):
        raise ValueError(
            "This model was already prepared by optimize_for_inference; prepare the original model at the other "
            "precision instead."
        )
    unsupported = [name for name in unsupported_parameters(model) if _in_towers(name, prefixes)]
    if unsupported:
        shown = ", ".join(unsupported[:4]) + (f" and {len(unsupported) - 4} more" if len(unsupported) > 4 else "")
        raise NotImplementedError(
            f"The fast inference path cannot run {shown}: it swaps CLIP's attention, MLP and patch embedding for "
            "prepared ones and these parameters are in modules it does not know (deep prompts, which reach into the "
            "attention, or unmerged adapters). Merge LoRA adapters first (`model = model.merge_and_unload()`); encode a "
            "model with deep prompts with its own encode_video."
        )


def _copy_for_preparing(model: TempMeCLIPModel, prefixes: tuple[str, ...]) -> TempMeCLIPModel:
    """A deep copy of `model` that shares, rather than copies, the weights of the modules about to be swapped and
    those of the towers left as they are (the copy never writes to either)."""
    shared = {id(p): p for module in model.modules() if preparer(module) is not None for p in module.parameters()}
    shared.update((id(p), p) for name, p in model.named_parameters()
                  if _in_towers(name, tuple(TOWERS.values())) and not _in_towers(name, prefixes))
    return copy.deepcopy(model, shared)


def compile_vision_tower(model: TempMeCLIPModel, dtype: torch.dtype | None = None, **compile_kwargs) -> None:
    """Compile `model.vision_model` whole, in place, its blocks at `dtype` (`None`: as they are).

    The embeddings, the first layer norm and the blocks are cast to `dtype`; the final layer norm (which the tower runs
    at its own weights' dtype) and the projections keep the model's, so embeddings come out at the model's precision.
    Shapes are static at first; a second batch size makes the batch dimension dynamic (torch's automatic dynamic
    shapes) instead of compiling once per size. `compile_kwargs` go to `torch.compile` (`mode`, `backend`, ...).
    """
    vision = model.vision_model
    if dtype is not None:
        for module in (vision.embeddings, vision.pre_layrnorm, vision.encoder):
            module.to(dtype)
    vision.compile(**{**compile_kwargs, "fullgraph": True})


@torch.no_grad()
def optimize_for_inference(
    model: TempMeCLIPModel,
    precision: str = "fp32",
    *,
    inplace: bool = False,
    attn_implementation: str | None = None,
    compile: bool | dict = False,
    towers: Sequence[str] = ("vision", "text"),
) -> TempMeCLIPModel:
    """`model` prepared for fast encoding at `precision`: a `TempMeCLIPModel` with its kernels swapped (see above).

    Args:
        model: a `TempMeCLIPModel` (LoRA adapters merged), or one with bottleneck adapters (`apply_adapter`), whose
            base model is prepared.
        precision:
            - `"fp32"`: float32, features within 1e-5 of the model's own; on a CPU, oneDNN linears with the activation
              fused, and one fused q/k/v projection per block.
            - `"bf16"`: bfloat16 tokens and weights between the patch embedding and the final layer norm of the
              vision tower, bfloat16 matmuls in the text tower. Fast only on CPUs with native bfloat16 (AVX512-BF16 or
              AMX; `cpu_features()` says) or on GPUs; elsewhere slower than float32, and a warning says so.
            - `"int8"`: linear layers quantized to int8 (weights per output channel, activations per tensor at run
              time; CPU only). Activations are quantized to 7 bits on CPUs without VNNI.
        inplace: swap the modules of `model` itself instead of a copy (it then no longer trains or saves).
        attn_implementation: the attention kernel of the prepared model (`"sdpa"`, `"eager"`, or any name of
            transformers' attention registry); `None` keeps the model's.
        compile: instead of swapping modules, compile the vision tower whole with inductor at `precision` (`"fp32"`
            or `"bf16"`; see the module docstring). The text tower runs as the model's. A dict is `torch.compile`'s
            keyword arguments, e.g. `{"mode": "max-autotune"}` on a GPU.
        towers: the towers whose modules are swapped, `"vision"` and/or `"text"`. `("text",)` prepares the text tower
            only (all that encoding text queries runs): the vision tower stays the model's, its weights shared with
            `model` rather than copied, and parameters the fast path cannot run are refused only in the text tower.

    Returns:
        The prepared `TempMeCLIPModel`, in eval mode. It does not train and refuses `state_dict()`: save the original.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"Unknown precision {precision!r}; choose one of {', '.join(repr(p) for p in PRECISIONS)}.")
    compiling = compile is True or isinstance(compile, dict)
    towers = (towers,) if isinstance(towers, str) else tuple(towers)
    if not towers or any(tower not in TOWERS for tower in towers):
        raise ValueError(f"towers must name one or both of 'vision' and 'text', got {towers!r}.")
    if compiling and "vision" not in towers:
        raise ValueError("compile=True compiles the vision tower: give towers=('vision',) or both towers.")
    prefixes = tuple(TOWERS[tower] for tower in towers)
    if compiling and precision == "int8":
        raise ValueError(
            "compile=True runs precision='fp32' or 'bf16': inductor cannot compile the int8 kernels. Use "
            "precision='int8' without compile, or compile at 'bf16'."
        )
    model = _unwrap(model)
    _check_preparable(model, prefixes)
    device = model.logit_scale.device
    features = cpu_features() if device.type == "cpu" else {}
    if precision == "bf16" and device.type == "cpu" and not features["onednn_bf16"]:
        warnings.warn(
            f"This CPU ({features['cpu']}) has no native bfloat16 arithmetic (AVX512-BF16 or AMX): bf16 inference will "
            "be slower than fp32 here. Use precision='int8' or 'fp32'.",
            stacklevel=2,
        )
    if precision == "int8" and device.type != "cpu":
        raise ValueError(f"int8 inference runs on CPU only; the model is on {device}. Move it with model.to('cpu').")
    reduce_range = precision == "int8" and not features.get("vnni", False)

    if compiling:
        # A full copy: casting the tower to bfloat16 would otherwise cast the weights it shares with `model`.
        model = model if inplace else copy.deepcopy(model)
        if attn_implementation is not None:
            model.set_attn_implementation(attn_implementation)
        compile_vision_tower(model, compute_dtype(precision), **(compile if isinstance(compile, dict) else {}))
        return model.eval()
    if not inplace:
        model = _copy_for_preparing(model, prefixes)
    if attn_implementation is not None:
        model.set_attn_implementation(attn_implementation)
    for name, module in list(model.named_modules()):
        prepare = preparer(module)
        if prepare is not None and _in_towers(name, prefixes):
            model.set_submodule(name, prepare(module, precision, reduce_range))
    return model.eval()


__all__ = ["PREPARED_MODULES", "TOWERS", "compile_vision_tower", "optimize_for_inference", "unsupported_parameters"]
