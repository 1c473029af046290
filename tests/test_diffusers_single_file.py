"""Which diffusers configs a single-file checkpoint loads with: declared by the file, never guessed from tensor
shapes."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="the diffusers backend needs torch")
pytest.importorskip("diffusers", reason="the diffusers backend needs diffusers")

from safetensors.torch import save_file  # noqa: E402
from tiny_builders import write_tiny_single_file  # noqa: E402  # tests/tiny_builders.py

from vidstyle.backends.diffusers import single_file_config_dir  # noqa: E402
from vidstyle.errors import ModelNotFoundError  # noqa: E402
from vidstyle.tiny_models import UNET_CHANNELS, tiny_pipeline_dir  # noqa: E402


def _sd15_keys(conv_in_channels: int) -> dict:
    """The keys diffusers uses to tell an SD1.x checkpoint, with the given conv_in width."""
    return {
        "model.diffusion_model.input_blocks.0.0.weight": torch.zeros(conv_in_channels, 4, 3, 3),
        "model.diffusion_model.output_blocks.11.0.skip_connection.weight": torch.zeros(1),
        "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": torch.zeros(1, 1),
    }


def test_the_tiny_single_file_names_its_own_configs(tmp_path: Path) -> None:
    path = write_tiny_single_file(tmp_path / "tiny.safetensors")
    assert single_file_config_dir(path) == tiny_pipeline_dir()


def test_a_checkpoint_shaped_like_the_tiny_model_is_not_taken_for_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A file that merely has the tiny UNet's conv_in width is an SD1.5 file to diffusers: it needs SD1.5's
    # configs (not cached here, so the fetch command is named), not the tiny model's folder.
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    lookalike = tmp_path / "narrow.safetensors"
    save_file(_sd15_keys(UNET_CHANNELS[0]), str(lookalike))
    with pytest.raises(ModelNotFoundError, match="hf download"):
        single_file_config_dir(lookalike)


def test_an_unknown_config_name_in_the_metadata_is_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # File metadata is untrusted: it may name the built-in tiny configs, never a folder of its choosing.
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    path = tmp_path / "claims.safetensors"
    save_file(_sd15_keys(320), str(path), metadata={"vidstyle.diffusers_config": str(tmp_path)})
    with pytest.raises(ModelNotFoundError, match="hf download"):
        single_file_config_dir(path)
