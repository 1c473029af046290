"""Evidence for picking an epoch: losses from made-up TensorBoard event files (or the parsed
log), LoRA files and sample images in sd-scripts' naming, the report files, and installing
a chosen epoch into a WebUI folder with its Lora card files."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import pytest
import train_helpers as th  # tests/train_helpers.py
from PIL import Image

from trainer import commands
from trainer.evidence import gather
from trainer.install import install_lora
from trainer.report import HIGHLIGHT, LABEL_WIDTH, build_report
from trainer.run import load_run
from vidstyle.errors import UserInputError

EPOCHS = 4
TRAIN = [0.14, 0.11, 0.09, 0.08]  # falls every epoch
VAL = [0.20, 0.16, 0.17, 0.19]  # lowest at epoch 2: the situation the report is for
PROMPTS = 5  # sd15-character: 3 preset prompts + 2 held-out captions


@pytest.fixture()
def run_dir(tmp_path: Path) -> Path:
    dataset = th.make_dataset(tmp_path / "ds")
    out = tmp_path / "run"
    argv = th.config_argv(dataset, th.make_checkpoint(tmp_path), out, extra=["--set", f"max_train_epochs={EPOCHS}"])
    assert commands.main(argv) == 0
    return out


def fake_training(run_dir: Path, val: list[float] = VAL, events: bool = True, final_epoch: int = EPOCHS) -> None:
    """What sd-scripts leaves behind: LoRA files, samples, TensorBoard events (in its layout)."""
    output = run_dir / "output"
    output.mkdir(exist_ok=True)
    for epoch in range(1, final_epoch):
        th.write_safetensors_header(
            output / f"mikuchan-{epoch:06d}.safetensors", ["lora_unet_x.lora_down.weight"], {"ss_epoch": str(epoch)}
        )
    th.write_safetensors_header(
        output / "mikuchan.safetensors", ["lora_unet_x.lora_down.weight"], {"ss_epoch": str(final_epoch)}
    )
    for epoch in range(0, final_epoch + 1):
        for index in range(PROMPTS):
            th.write_sample(
                output / "sample",
                th.sample_name("mikuchan", epoch, index, seed=1234 + index),
                (40 * epoch, 30 * index, 90),
            )
    if events:
        steps = [(s, 0.15 - 0.004 * s) for s in range(1, 17)]
        scalars = {"loss/current": steps, "loss/average": steps, "loss/epoch_average": list(enumerate(TRAIN, start=1))}
        if val:
            scalars["loss/validation/epoch_average"] = list(enumerate(val, start=1))
        th.write_events(run_dir / "logs" / "20260101120000" / "network_train", scalars)


def test_gather_reads_events_files_and_samples(run_dir: Path) -> None:
    fake_training(run_dir)
    ev = gather(load_run(run_dir))
    assert ev.source == "tensorboard"
    assert [r.epoch for r in ev.rows] == [0, 1, 2, 3, 4]
    assert [r.train_loss for r in ev.rows[1:]] == pytest.approx(TRAIN) and [
        r.val_loss for r in ev.rows[1:]
    ] == pytest.approx(VAL)
    assert (
        ev.rows[0].file is None and ev.rows[4].file.name == "mikuchan.safetensors"
    )  # the final save is epoch 4 (ss_epoch)
    assert all(len(r.samples) == PROMPTS for r in ev.rows)
    assert ev.recommended == 2  # lowest validation loss, not lowest training loss (epoch 4)
    assert len(ev.prompts) == PROMPTS and ev.prompts[0]["prompt"].startswith("mikuchan")
    assert len(ev.step_losses["loss/current"]) == 16


def test_newest_sample_wins_and_step_samples_are_noted(run_dir: Path) -> None:
    fake_training(run_dir)
    sample = run_dir / "output" / "sample"
    newer = th.write_sample(sample, th.sample_name("mikuchan", 1, 0, stamp="20270101000000", seed=1234), (255, 0, 0))
    (sample / "mikuchan_000050_00_20260101120000_1234.png").write_bytes(
        newer.read_bytes()
    )  # sample_every_n_steps style
    ev = gather(load_run(run_dir))
    assert ev.row(1).samples[0] == newer
    assert any("step-numbered" in n for n in ev.notes)


def test_report_files_and_the_marked_row(run_dir: Path) -> None:
    fake_training(run_dir)
    report = build_report(run_dir, thumb=64)
    folder = run_dir / "report"
    for name in ("grid.png", "loss.png", "summary.md", "summary.json", "index.html"):
        assert (folder / name).is_file()
    with Image.open(folder / "grid.png") as grid:
        rows = EPOCHS + 1
        header, gap = 16 * 4 + 12, 6
        assert grid.height == header + rows * (64 + gap) + gap
        assert grid.width > LABEL_WIDTH + PROMPTS * (64 + gap) + 200  # the recommendation panel sits beside the grid
        marked_top = header + 2 * (64 + gap)  # row of epoch 2 (rows start at epoch 0)
        assert grid.convert("RGB").getpixel((LABEL_WIDTH - 10, marked_top + 60)) == HIGHLIGHT
        assert grid.convert("RGB").getpixel((LABEL_WIDTH - 10, header + 3 * (64 + gap) + 60)) == (255, 255, 255)
    with Image.open(folder / "loss.png") as loss:
        assert loss.size == (1100, 420)
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["recommended_epoch"] == 2 and summary["loss_source"] == "tensorboard"
    assert [e["val_loss"] for e in summary["epochs"][1:]] == pytest.approx(VAL)
    assert [e["file"] for e in summary["epochs"]] == [
        None,
        "mikuchan-000001.safetensors",
        "mikuchan-000002.safetensors",
        "mikuchan-000003.safetensors",
        "mikuchan.safetensors",
    ]
    markdown = (folder / "summary.md").read_text()
    assert "| 2 **(lowest val)** | 0.1100 | 0.1600 | mikuchan-000002.safetensors | 5 |" in markdown
    page = (folder / "index.html").read_text()
    assert '<img src="grid.png"' in page and "Lowest validation loss: epoch 2" in page
    assert page.index('<img src="grid.png"') < page.index("<aside>")  # beside the grid, not instead of it
    assert "Lowest validation loss: epoch 2 (0.1600" in report.summary_text()


def test_no_validation_means_no_recommendation(run_dir: Path) -> None:
    fake_training(run_dir, val=[])
    report = build_report(run_dir, thumb=48)
    assert report.recommended is None
    assert "No recommendation" in report.recommendation_text()
    assert any("lowest training loss is not the best LoRA" in n for n in report.evidence.notes)
    assert (run_dir / "report" / "grid.png").is_file()  # the grid is drawn all the same


def test_losses_fall_back_to_the_parsed_log(run_dir: Path) -> None:
    fake_training(run_dir, events=False)
    progress = {
        "epochs": {
            str(e): {"train_loss": t, "val_loss": v} for e, (t, v) in enumerate(zip(TRAIN, VAL, strict=False), start=1)
        },
        "loss_history": [[1, 0.15], [2, "nan"], [3, 0.14]],
    }
    (run_dir / "progress.json").write_text(json.dumps(progress))
    ev = gather(load_run(run_dir))
    assert ev.source == "log" and ev.recommended == 2
    assert [s for s, _ in ev.step_losses["loss/average"]] == [1, 2, 3]  # a NaN step stays (a gap in the plot)
    assert any("console log" in n for n in ev.notes)
    build_report(run_dir, thumb=48)


def test_events_from_before_a_restart_are_ignored(run_dir: Path) -> None:
    fake_training(run_dir)
    old = {"loss/validation/epoch_average": [(1, 0.01)], "loss/epoch_average": [(1, 0.5)]}
    th.write_events(run_dir / "logs" / "20250101000000" / "network_train", old, wall_time=time.time() - 3600)
    (run_dir / "progress.json").write_text(json.dumps({"run_started_at": time.time() - 60}))
    ev = gather(load_run(run_dir))
    assert ev.row(1).val_loss == pytest.approx(VAL[0]) and ev.recommended == 2


def test_report_of_an_untrained_run_is_refused(run_dir: Path) -> None:
    with pytest.raises(UserInputError, match="no trained epochs"):
        build_report(run_dir)


def test_report_command(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fake_training(run_dir)
    assert commands.main(["report", str(run_dir), "--thumb", "48"]) == 0
    out = capsys.readouterr().out
    assert "| 2 **(lowest val)** |" in out and "wrote" in out


# --------------------------------------------------------------------------- install


@pytest.fixture()
def webui(tmp_path: Path) -> Path:
    root = tmp_path / "stable-diffusion-webui"
    (root / "models").mkdir(parents=True)
    (root / "webui.py").write_text("")
    return root


def test_install_writes_the_lora_card(run_dir: Path, webui: Path) -> None:
    fake_training(run_dir)
    written = install_lora(run_dir, "best", webui=webui)
    folder = webui / "models" / "Lora"
    assert written == [folder / "mikuchan.safetensors", folder / "mikuchan.preview.png", folder / "mikuchan.json"]
    assert (folder / "mikuchan.safetensors").read_bytes() == (
        run_dir / "output" / "mikuchan-000002.safetensors"
    ).read_bytes()
    with (
        Image.open(folder / "mikuchan.preview.png") as preview,
        Image.open(gather(load_run(run_dir)).row(2).samples[0]) as sample,
    ):
        assert preview.getpixel((5, 5)) == sample.convert("RGB").getpixel((5, 5))
    card = json.loads((folder / "mikuchan.json").read_text())
    # the keys the WebUI's Lora metadata editor writes (extensions-builtin/Lora/ui_edit_user_metadata.py)
    assert set(card) == {"description", "sd version", "activation text", "preferred weight", "negative text", "notes"}
    assert card["activation text"] == "mikuchan" and card["preferred weight"] == 0.8 and card["sd version"] == "SD1"
    assert "Epoch 2 of 4" in card["notes"] and "validation loss 0.1600" in card["notes"]


def test_install_epoch_choices_and_overwrite_rules(run_dir: Path, webui: Path) -> None:
    fake_training(run_dir)
    install_lora(run_dir, "last", webui=webui, name="miku-last", weight=1.0)
    folder = webui / "models" / "Lora"
    assert (folder / "miku-last.safetensors").read_bytes() == (run_dir / "output" / "mikuchan.safetensors").read_bytes()
    assert json.loads((folder / "miku-last.json").read_text())["preferred weight"] == 1.0
    with pytest.raises(UserInputError, match="already exist.*--force"):
        install_lora(run_dir, "3", webui=webui, name="miku-last")
    install_lora(run_dir, "3", webui=webui, name="miku-last", force=True)
    assert (folder / "miku-last.safetensors").read_bytes() == (
        run_dir / "output" / "mikuchan-000003.safetensors"
    ).read_bytes()
    with pytest.raises(UserInputError, match="saved epochs: 1, 2, 3, 4"):
        install_lora(run_dir, "9", webui=webui)
    with pytest.raises(UserInputError, match="cannot be a file name"):
        install_lora(run_dir, "1", webui=webui, name="../escape")
    with pytest.raises(UserInputError, match="between 0 and 2"):
        install_lora(run_dir, "1", webui=webui, name="w", weight=3.0)


def test_install_needs_a_webui_folder(run_dir: Path, tmp_path: Path) -> None:
    fake_training(run_dir)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserInputError, match="does not look like a Stable Diffusion WebUI"):
        install_lora(run_dir, "1", webui=tmp_path / "empty")
    lora_dir = tmp_path / "my-loras"
    lora_dir.mkdir()
    assert install_lora(run_dir, "1", lora_dir=lora_dir)[0] == lora_dir / "mikuchan.safetensors"


def test_install_best_without_validation_is_refused(run_dir: Path, webui: Path) -> None:
    fake_training(run_dir, val=[])
    with pytest.raises(UserInputError, match="no validation loss"):
        install_lora(run_dir, "best", webui=webui)


def test_install_command(run_dir: Path, webui: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fake_training(run_dir)
    assert commands.main(["install", str(run_dir), "--epoch", "2", "--webui", str(webui)]) == 0
    assert capsys.readouterr().out.count("wrote") == 3


@pytest.mark.skipif(not hasattr(os, "umask") or os.name == "nt", reason="POSIX file modes")
def test_installed_files_get_the_mode_a_plain_open_gives(run_dir: Path, webui: Path) -> None:
    # the WebUI may run as another user: no 0600 temp-file modes left on what we install
    fake_training(run_dir)
    umask = os.umask(0o022)
    try:
        written = install_lora(run_dir, "best", webui=webui)
        assert os.umask(0o022) == 0o022  # installing leaves the process umask alone
    finally:
        os.umask(umask)
    assert [stat.S_IMODE(p.stat().st_mode) for p in written] == [0o644] * 3
