"""Models that travel: timm's Hub folder, the Hugging Face Hub (offline: a stand-in API and a pre-filled
cache), and the model card (mxa.files.hub)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import timm
import torch

import mxa
from mxa.cli import main
from mxa.decision.rule import DecisionRule
from mxa.files.hub import HUB_FILES, export_hub, model_card, push_to_hub

# timm reads local-dir: and hf-hub: folders through huggingface_hub, model.safetensors from timm 1.0.26 on:
# both come with the hub extra
pytest.importorskip("huggingface_hub")
if tuple(int(p) for p in timm.__version__.split(".")[:3] if p.isdigit()) < (1, 0, 26):
    pytest.skip('the hub extra needs timm>=1.0.26: pip install "mxa-attention[hub]"', allow_module_level=True)


def _trained_looking(model: torch.nn.Module) -> torch.nn.Module:
    """MXA switched on (scale != 0), so a lost MXA weight would change the logits."""
    for blk in mxa.mxa_blocks(model).values():
        with torch.no_grad():
            blk.scale.fill_(0.3)
    return model.eval()


@pytest.fixture(scope="module")
def ours(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    torch.manual_seed(0)
    model = timm.create_model(
        "efficientvit_ml_m0", img_size=64, mxa_cfg=dict(rois=2, roi_classes=14, roi_skip=[0])
    )
    model = _trained_looking(model)
    model.decision_rule = DecisionRule(
        labels=model.label_names, thresholds=dict.fromkeys(model.label_names, 0.3)
    )
    folder = export_hub(
        model, tmp_path_factory.mktemp("hub") / "m0", training={"data": "phantom", "epochs": 2}
    )
    return model, folder


def test_timm_and_mxa_load_the_hub_folder_with_the_same_logits(ours: tuple[torch.nn.Module, Path]) -> None:
    model, folder = ours
    assert sorted(p.name for p in folder.iterdir()) == sorted(HUB_FILES)
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["architecture"] == "efficientvit_ml_m0" and cfg["model_args"]["img_size"] in (64, [64, 64])
    assert cfg["pretrained_cfg"]["input_size"] == [1, 64, 64]  # the model as built, not the default's 224
    assert "preprocessing" in cfg["mxa"] and cfg["mxa"]["decision"]["thresholds"]["Lung Lesion"] == 0.3
    x = torch.randn(2, 1, 64, 64)
    by_timm = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    by_mxa = mxa.load_model(f"local-dir:{folder}")
    torch.testing.assert_close(by_timm(x), model(x), rtol=0, atol=0)
    torch.testing.assert_close(by_mxa(x), model(x), rtol=0, atol=0)
    assert by_mxa.decision_rule.thresholds == model.decision_rule.thresholds
    torch.testing.assert_close(mxa.load_model(folder)(x), model(x), rtol=0, atol=0)  # the folder's path too


def test_a_grafted_model_travels_too(tmp_path: Path) -> None:
    model = _trained_looking(timm.create_model("resnet50_mxa", pretrained=False))
    folder = export_hub(model, tmp_path / "r50")
    x = torch.randn(2, 1, 64, 64)
    torch.testing.assert_close(timm.create_model(f"local-dir:{folder}", pretrained=True).eval()(x), model(x))
    torch.testing.assert_close(mxa.load_model(f"local-dir:{folder}")(x), model(x))


def test_an_existing_folder_is_kept_unless_overwrite(ours: tuple[torch.nn.Module, Path]) -> None:
    model, folder = ours
    before = (folder / "model.safetensors").read_bytes()
    with pytest.raises(ValueError, match="exists and is not empty"):
        export_hub(model, folder)
    assert (folder / "model.safetensors").read_bytes() == before


def test_the_model_card_says_what_the_model_is_and_is_not(ours: tuple[torch.nn.Module, Path]) -> None:
    model, folder = ours
    card = (folder / "README.md").read_text()
    assert "library_name: timm" in card and "Not a medical device" in card
    assert "Trained on synthetic phantom X-rays" in card  # phantom-trained: said loudly
    assert "| Lung Lesion | 0.300 |" in card and "`epochs`: `2`" in card
    metrics = {"data": "phantom", "n_images": 50, "macro_auc": 0.81, "ci": {"macro_auc": [0.78, 0.84]}}
    assert "| macro auc | 0.810 | [0.780, 0.840] |" in model_card(model, None, metrics)
    assert "block of each stage" not in card  # MXA in every block: the default layout, not named


def test_a_one_block_per_stage_model_says_so_and_travels(tmp_path: Path) -> None:
    model = _trained_looking(timm.create_model("efficientvit_ml_m0", img_size=64, mxa_per_stage="last"))
    folder = export_hub(model, tmp_path / "last", training={"mxa_per_stage": "last"})
    card = (folder / "README.md").read_text()
    assert "in the last block of each stage that has it" in card and "`mxa_per_stage`: `last`" in card
    again = mxa.load_model(f"local-dir:{folder}")
    assert (
        list(mxa.mxa_blocks(again))
        == list(mxa.mxa_blocks(model))
        == ["stages.0.blocks.0", "stages.1.blocks.1", "stages.2.blocks.2"]
    )
    x = torch.randn(2, 1, 64, 64)
    torch.testing.assert_close(again(x), model(x), rtol=0, atol=0)


class StandInHub:
    """What push_to_hub asks of huggingface_hub.HfApi, recorded (with the files as they were uploaded)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []
        self.uploaded: dict[str, bytes] = {}

    def create_repo(self, repo_id: str, **kw: object) -> None:
        self.calls.append(("create_repo", {"repo_id": repo_id, **kw}))

    def upload_folder(self, *, repo_id: str, folder_path: str, **kw: object) -> None:
        self.calls.append(("upload_folder", {"repo_id": repo_id, **kw}))
        self.uploaded = {p.name: p.read_bytes() for p in Path(folder_path).iterdir()}


def test_push_uploads_the_whole_folder_to_a_private_repo(ours: tuple[torch.nn.Module, Path]) -> None:
    _, folder = ours
    api = StandInHub()
    assert push_to_hub(folder, "mxa-org/m0", api=api) == "https://huggingface.co/mxa-org/m0"
    assert api.calls[0] == ("create_repo", {"repo_id": "mxa-org/m0", "repo_type": "model", "private": True,
                                            "exist_ok": True})  # fmt: skip
    assert api.calls[1][0] == "upload_folder" and api.calls[1][1]["repo_type"] == "model"
    assert sorted(api.uploaded) == sorted(HUB_FILES)
    with pytest.raises(ValueError, match="ORG/NAME"):
        push_to_hub(folder, "no-org", api=api)

    class Offline(StandInHub):
        def create_repo(self, repo_id: str, **kw: object) -> None:
            raise ConnectionError("no network")

    with pytest.raises(ValueError, match="cannot reach the Hugging Face Hub.*the folder .* is complete"):
        push_to_hub(folder, "mxa-org/m0", api=Offline())


def _fill_cache(cache: Path, repo_id: str, folder: Path) -> None:
    """The Hugging Face cache layout of a downloaded repo: refs/main and a snapshot of its files."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    sha = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(sha)
    shutil.copytree(folder, repo / "snapshots" / sha)


def test_hub_ids_load_from_the_cache_offline(
    ours: tuple[torch.nn.Module, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    from huggingface_hub import constants

    model, folder = ours
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    _fill_cache(tmp_path / "cache", "mxa-org/m0", folder)
    x = torch.randn(1, 1, 64, 64)
    torch.testing.assert_close(mxa.load_model("hf-hub:mxa-org/m0")(x), model(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match="cannot get hf-hub:mxa-org/other.*local-dir:FOLDER"):
        mxa.load_model("hf-hub:mxa-org/other")
    # the command line takes Hub ids where it takes models; a missing one is one error line
    image = Path(__file__).parent / "data" / "cxr" / "00000001_000.png"
    out = tmp_path / "p.csv"
    assert main(["predict", "--model", "hf-hub:mxa-org/m0", str(image), "--out", str(out)]) == 0
    assert out.read_text().count("\n") == 2
    assert (
        main(["predict", "--model", "hf-hub:mxa-org/other", str(image), "--out", str(tmp_path / "q.csv")])
        == 2
    )
    assert "error: cannot get hf-hub:mxa-org/other" in capsys.readouterr().err


def test_export_hub_from_the_command_line(ours: tuple[torch.nn.Module, Path], tmp_path: Path, capsys) -> None:
    _, folder = ours
    out = tmp_path / "again"
    assert (
        main(["export", "--checkpoint", f"local-dir:{folder}", "--format", "hub", "--output", str(out)]) == 0
    )
    assert sorted(p.name for p in out.iterdir()) == sorted(HUB_FILES)
    onnx = ["export", "--checkpoint", str(folder), "--format", "onnx", "--output", str(tmp_path / "m.onnx")]
    assert main([*onnx, "--push-to-hub", "a/b"]) == 2
    assert "--push-to-hub go with --format hub" in capsys.readouterr().err
