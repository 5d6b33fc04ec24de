"""tempme export-onnx: the vision graph (merges included) and the text graph match PyTorch to 1e-4 in onnxruntime,
with a dynamic batch; the int8 graphs stay close. One export of a tiny TempMe model, shared by the tests."""

import json

import pytest
import torch
import torch.nn.functional as F

from conftest import random_video, tiny_config
from transformers_tempme import TempMeCLIPModel
from transformers_tempme.cli import main as tempme

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from transformers_tempme.inference.onnx_export import OnnxTempMe, example_text  # noqa: E402

pytestmark = pytest.mark.slow  # the dynamo exporter takes tens of seconds even for a tiny model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("onnx")
    config = tiny_config("tempme")
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    model = TempMeCLIPModel(config).eval()
    model.save_pretrained(root / "model")
    code = tempme(["export-onnx", str(root / "model"), str(root / "onnx"), "--quantize", "--opset", "18"])
    assert code == 0
    return model, root / "onnx"


def test_export_writes_both_graphs_at_the_requested_opset(exported):
    _, folder = exported
    manifest = json.loads((folder / "onnx_export.json").read_text())
    assert manifest["opset"] == 18
    assert set(manifest["files"]) == {"vision", "text", "vision_int8", "text_int8"}
    for file in manifest["files"].values():
        graph = onnx.load(str(folder / file))
        assert max(opset.version for opset in graph.opset_import if opset.domain in ("", "ai.onnx")) >= 17
    # The export checked itself against PyTorch on two batch sizes.
    assert 0 <= max(manifest["max_abs_diff"].values()) <= 1e-4
    vision = onnx.load(str(folder / "vision.onnx"))
    assert "TopK" in {node.op_type for node in vision.graph.node}  # the bipartite matching is in the graph


@torch.no_grad()
def test_onnxruntime_matches_pytorch_on_new_batch_sizes(exported):
    model, folder = exported
    onnx_model = OnnxTempMe(folder)
    for batch in (2, 5):
        pixel_values = random_video(batch, 4, model.config, seed=10 + batch)
        video_mask = torch.ones(batch, 4, dtype=torch.long)
        video_mask[0, -1] = 0
        expected = model.encode_video(pixel_values, video_mask)
        got = onnx_model.encode_video(pixel_values, video_mask)
        torch.testing.assert_close(got.video_embeds, expected.video_embeds, atol=1e-4, rtol=0)
        torch.testing.assert_close(got.frame_embeds, expected.frame_embeds, atol=1e-4, rtol=0)
        input_ids, attention_mask = example_text(model.config, batch, words=6 + batch, seed=batch)
        expected_text = model.get_text_features(input_ids=input_ids, attention_mask=attention_mask).pooler_output
        got_text = onnx_model.get_text_features(input_ids=input_ids, attention_mask=attention_mask).pooler_output
        torch.testing.assert_close(got_text, expected_text, atol=1e-4, rtol=0)


@torch.no_grad()
def test_int8_graphs_stay_close(exported):
    model, folder = exported
    onnx_model = OnnxTempMe(folder, int8=True, threads=1)
    pixel_values = random_video(4, 4, model.config, seed=3)
    expected = model.encode_video(pixel_values).video_embeds
    assert F.cosine_similarity(onnx_model.encode_video(pixel_values).video_embeds, expected).min() > 0.99


def test_missing_model_and_old_opset_are_refused(tmp_path, capsys):
    assert tempme(["export-onnx", str(tmp_path / "nothing"), str(tmp_path / "out")]) == 2
    assert "No such folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        tempme(["export-onnx", str(tmp_path / "nothing"), str(tmp_path / "out"), "--opset", "16"])


def test_a_prepared_model_is_refused_with_the_fix(tmp_path):
    from transformers_tempme import optimize_for_inference
    from transformers_tempme.inference.onnx_export import export_onnx

    model = TempMeCLIPModel(tiny_config("tempme")).eval()
    with pytest.raises(ValueError, match="export the original model"):
        export_onnx(optimize_for_inference(model), tmp_path)
