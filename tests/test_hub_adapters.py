"""LoRA adapters round-trip as peft adapters: saved with their base model's name and the clip position embeddings."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import TINY_BACKBONE, tiny_config, tiny_inputs, tiny_model
from peft import PeftModel
from safetensors.torch import load_file
from transformers import CLIPConfig, CLIPModel

from transformers_tempme import TempMeCLIPModel, apply_lora, load_tempme, save_adapter
from transformers_tempme.hub.loading import adapter_base_model


def perturb_trainable(peft_model: PeftModel, seed: int = 3) -> None:
    """Stand-in for training: move every LoRA matrix and clip position embedding away from its initial value."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if parameter.requires_grad:
                parameter.add_(0.2 * torch.randn(parameter.shape, generator=generator))


def logits(model, inputs) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).logits_per_text


@pytest.fixture
def trained_adapter(tmp_path):
    """A saved tiny base model, a 'trained' LoRA adapter on it, and the trained model's logits."""
    base_dir, adapter_dir = tmp_path / "base", tmp_path / "adapter"
    tiny_model().save_pretrained(base_dir)
    base = TempMeCLIPModel.from_pretrained(base_dir).eval()
    inputs = tiny_inputs(base.config)
    base_logits = logits(base, inputs)
    peft_model = apply_lora(base).eval()
    perturb_trainable(peft_model)
    trained_logits = logits(peft_model, inputs)
    assert not torch.allclose(trained_logits, base_logits, atol=1e-3), "the perturbation must change the outputs"
    save_adapter(peft_model, adapter_dir)
    return base_dir, adapter_dir, inputs, trained_logits, peft_model


def test_adapter_folder_names_its_base_and_holds_the_clip_position_embeddings(trained_adapter):
    base_dir, adapter_dir, _, _, peft_model = trained_adapter
    adapter_config = json.loads((adapter_dir / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == str(base_dir)
    assert adapter_base_model(adapter_dir) == str(base_dir)
    assert adapter_config["modules_to_save"] == ["clip_position_embedding"]

    saved = load_file(adapter_dir / "adapter_model.safetensors")
    clip_merge_layers = peft_model.base_model.model.config.clip_merge_layers
    for layer in clip_merge_layers:
        key = f"base_model.model.vision_model.encoder.layers.{layer}.clip_position_embedding.weight"
        trained = peft_model.base_model.model.vision_model.encoder.layers[layer].clip_position_embedding
        torch.testing.assert_close(saved[key], trained.modules_to_save["default"].weight.detach())
    assert any("lora_A" in key for key in saved) and any("lora_B" in key for key in saved)


def test_peft_from_pretrained_restores_the_trained_model(trained_adapter):
    base_dir, adapter_dir, inputs, trained_logits, _ = trained_adapter
    fresh_base = TempMeCLIPModel.from_pretrained(base_dir)
    restored = PeftModel.from_pretrained(fresh_base, adapter_dir).eval()
    torch.testing.assert_close(logits(restored, inputs), trained_logits, rtol=0, atol=0)

    # The clip position embeddings are part of what the adapter restores: putting back the base's changes the output.
    with torch.no_grad():
        for layer in restored.base_model.model.vision_model.encoder.layers:
            if layer.clip_position_embedding is not None:
                wrapper = layer.clip_position_embedding
                wrapper.modules_to_save["default"].weight.copy_(wrapper.original_module.weight)
    assert not torch.allclose(logits(restored, inputs), trained_logits, atol=1e-4)


@pytest.mark.parametrize("merge", [False, True])
def test_load_tempme_loads_base_and_adapter_in_one_call(trained_adapter, merge):
    _, adapter_dir, inputs, trained_logits, _ = trained_adapter
    model = load_tempme(adapter=adapter_dir, merge=merge)
    assert isinstance(model, TempMeCLIPModel) == merge
    assert isinstance(model, PeftModel) == (not merge)
    assert not model.training
    # Folding LoRA into the weights changes float rounding: logits (scale ~14) agree to ~1e-4 relative.
    tolerance = 1e-3 if merge else 1e-5
    torch.testing.assert_close(logits(model, inputs), trained_logits, rtol=tolerance, atol=tolerance)


def test_load_tempme_builds_the_base_from_a_clip_checkpoint(tmp_path):
    torch.manual_seed(0)
    clip = CLIPModel(CLIPConfig(**TINY_BACKBONE))
    clip.save_pretrained(tmp_path / "clip")
    schedule = tiny_config()
    peft_model = apply_lora(TempMeCLIPModel.from_clip(str(tmp_path / "clip"), schedule)).eval()
    perturb_trainable(peft_model)
    inputs = tiny_inputs(schedule)
    trained_logits = logits(peft_model, inputs)
    save_adapter(peft_model, tmp_path / "adapter", base_model_name_or_path=str(tmp_path / "clip"))

    model = load_tempme(adapter=tmp_path / "adapter", schedule=schedule, merge=True)
    torch.testing.assert_close(logits(model, inputs), trained_logits, rtol=1e-5, atol=1e-5)


def test_save_adapter_refuses_an_adapter_without_a_base_model(tmp_path):
    peft_model = apply_lora(tiny_model())
    with pytest.raises(ValueError, match="base_model_name_or_path"):
        save_adapter(peft_model, tmp_path / "adapter")


def test_load_tempme_needs_a_model_or_an_adapter():
    with pytest.raises(ValueError, match="base model, an adapter"):
        load_tempme()


def test_load_tempme_takes_an_adapter_folder_with_its_tempme_config(trained_adapter, tmp_path):
    """What `tempme train` writes: the adapter and the TempMe config it was trained with, in one folder."""
    _, adapter_dir, inputs, trained_logits, peft_model = trained_adapter
    peft_model.base_model.model.config.save_pretrained(adapter_dir)
    model = load_tempme(adapter_dir, merge=True)
    assert isinstance(model, TempMeCLIPModel)
    torch.testing.assert_close(logits(model, inputs), trained_logits, rtol=1e-3, atol=1e-3)


def test_load_tempme_runs_the_same_weights_under_another_schedule(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path / "model")
    tome = tiny_config("tome")
    loaded = load_tempme(tmp_path / "model", schedule=tome)
    assert loaded.config.merge_schedule == {**tome.merge_schedule}
    assert loaded.config.clip_merge_layers == []
    inputs = tiny_inputs(model.config)
    with torch.no_grad():
        counts = loaded.encode_video(inputs["pixel_values"]).token_counts
    assert counts[-1][0] == model.config.num_frames  # no clip merging: one sequence per frame
    shared = {name: tensor for name, tensor in model.state_dict().items() if ".clip_position_embedding." not in name}
    for name, tensor in shared.items():
        torch.testing.assert_close(loaded.state_dict()[name], tensor, rtol=0, atol=0)


def test_with_schedule_keeps_clip_position_embeddings_where_the_schedule_has_them():
    model = tiny_model()
    other = model.with_schedule(tiny_config("tempme", cross_clip_keep_ratio=0.5))
    for layer in model.config.clip_merge_layers:
        name = f"vision_model.encoder.layers.{layer}.clip_position_embedding.weight"
        torch.testing.assert_close(other.state_dict()[name], model.state_dict()[name], rtol=0, atol=0)
    assert other.config.cross_clip_keep_ratio == 0.5


def test_load_tempme_needs_a_schedule_for_a_plain_clip_checkpoint(tmp_path):
    CLIPModel(CLIPConfig(**TINY_BACKBONE)).save_pretrained(tmp_path / "clip")
    with pytest.raises(ValueError, match="plain CLIP checkpoint: give the TempMe schedule"):
        load_tempme(tmp_path / "clip")
    assert load_tempme(tmp_path / "clip", schedule=tiny_config()).config.clip_merge_layers == [2, 3]


# --- one loader: the processor that goes with a model, what an index records, checked sources -------------------------


def word_processor(**settings):
    from transformers_tempme import TempMeProcessor
    from transformers_tempme.data.word_tokenizer import build_word_level_tokenizer

    tokenizer = build_word_level_tokenizer(["a dog runs on the beach"], model_max_length=16)
    return TempMeProcessor(tokenizer, **{"num_frames": 4, "max_words": 8, "image_size": 32, **settings})


def fitting_model(seed: int = 0):
    """A tiny model whose text embeddings fit `word_processor`'s vocabulary."""
    vocab = len(word_processor().tokenizer)
    return tiny_model(seed=seed, text_config={**TINY_BACKBONE["text_config"], "vocab_size": vocab})


@pytest.fixture
def folders(tmp_path):
    """A model saved with its processor, one saved without, and a LoRA adapter on the first saved without one."""
    model = fitting_model()
    model.save_pretrained(tmp_path / "with_processor")
    word_processor().save_pretrained(tmp_path / "with_processor")
    model.save_pretrained(tmp_path / "alone")
    save_adapter(apply_lora(TempMeCLIPModel.from_pretrained(tmp_path / "with_processor")), tmp_path / "adapter")
    return tmp_path


@pytest.mark.parametrize(
    "source, settings, expected",
    [
        ("with_processor", {}, {"num_frames": 4, "max_words": 8, "vocabulary": "words"}),
        ("with_processor", {"max_words": 6}, {"num_frames": 4, "max_words": 6, "vocabulary": "words"}),
        ("adapter", {}, {"num_frames": 4, "max_words": 8, "vocabulary": "words"}),  # the base model's processor
        ("adapter", {"num_frames": 8}, {"num_frames": 8, "max_words": 8, "vocabulary": "words"}),
    ],
    ids=["saved", "saved-with-settings", "adapter-takes-base", "adapter-with-settings"],
)
def test_load_processor_finds_the_processor_that_goes_with_a_model(folders, source, settings, expected):
    from transformers_tempme.hub.loading import load_processor

    processor = load_processor(folders / source, fitting_model(), **settings)
    assert (processor.num_frames, processor.max_words) == (expected["num_frames"], expected["max_words"])
    assert processor.tokenizer.get_vocab() == word_processor().tokenizer.get_vocab()


def test_load_processor_builds_clip_bpe_where_none_is_saved_and_refuses_it_for_another_vocabulary(
    folders, caplog, monkeypatch
):
    from data_helpers import wheel_cache_dir

    from transformers_tempme.hub.loading import load_processor

    monkeypatch.setenv("TEMPME_WHEEL_CACHE", str(wheel_cache_dir()))  # the CLIP tokenizer, built offline
    clip_sized = tiny_model(text_config={**TINY_BACKBONE["text_config"], "vocab_size": 49408})
    with caplog.at_level("WARNING", logger="transformers_tempme.hub.loading"):
        processor = load_processor(folders / "alone", clip_sized)
    assert len(processor.tokenizer) == 49408 and "No tokenizer is saved with" in caplog.text
    # The model's frame count, and max_words within its 16 text positions.
    assert (processor.num_frames, processor.max_words) == (4, 16)
    with pytest.raises(ValueError, match="The tokenizer has 49408 tokens but the model's text embedding table only"):
        load_processor(folders / "alone", fitting_model())


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"num_frames": 3}, r"The processor samples 3 frames per video, which the model's merge schedule cannot take "
                            r"\(The merge schedule does not divide the frame count"),
        ({"max_words": 17}, r"max_words=17 is more than the model's 16 text positions"),
    ],
    ids=["frames", "max-words"],
)
def test_check_processor_fits(settings, message):
    from transformers_tempme.hub.loading import check_processor_fits

    model = fitting_model()
    check_processor_fits(model, word_processor())
    check_processor_fits(model, word_processor(num_frames=8))  # the schedule takes 8 frames: 2 clips out
    with pytest.raises(ValueError, match=message):
        check_processor_fits(model, word_processor(**settings))


def test_an_index_record_loads_the_same_model_back(folders, monkeypatch):
    from transformers_tempme.hub.loading import describe_model, load_from_model_info, load_search_model
    from transformers_tempme.search.fingerprint import model_fingerprint

    model, processor, info = load_search_model(folders / "adapter", revision="v1")
    # A local folder is recorded by absolute path, without the revision (a Hub id keeps it).
    assert info == {"name_or_path": str((folders / "adapter").resolve()), "revision": None, "from_clip": False,
                    "preset": None, "schedule": model.config.merge_schedule}
    assert describe_model(model, "owner/name", revision="v1")["revision"] == "v1"
    monkeypatch.chdir(folders.parent)  # the index works from any directory
    reloaded, reprocessor = load_from_model_info(info)
    assert model_fingerprint(reloaded, reprocessor) == model_fingerprint(model, processor)
    with pytest.raises(ValueError, match="was built with a model held in memory"):
        load_from_model_info({**info, "name_or_path": ""})


def test_an_unreachable_hub_falls_back_to_the_cache(folders, tmp_path, monkeypatch, caplog):
    """A Hub id in the cache loads while the Hub cannot be reached (one warning); not in the cache, one error."""
    import shutil

    from huggingface_hub import constants

    from transformers_tempme.hub.repo_id import HubUnreachableError, check_model_source

    cache = tmp_path / "hub_cache"
    snapshot = cache / "models--owner--tiny" / "snapshots" / ("0" * 40)
    shutil.copytree(folders / "with_processor", snapshot)
    (cache / "models--owner--tiny" / "refs").mkdir()
    (cache / "models--owner--tiny" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    with caplog.at_level("WARNING", logger="transformers_tempme.hub.repo_id"):
        assert check_model_source("owner/tiny", cache_dir=cache) == {"local_files_only": True}
    assert "cannot be reached" in caplog.text and "loading owner/tiny from the local cache" in caplog.text
    model = load_tempme("owner/tiny", cache_dir=cache)
    torch.testing.assert_close(model.logit_scale, fitting_model().logit_scale)
    with pytest.raises(HubUnreachableError, match="owner/other is not a local folder and the Hub"):
        check_model_source("owner/other", cache_dir=cache)
