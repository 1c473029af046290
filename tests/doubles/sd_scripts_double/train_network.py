"""TEST DOUBLE of kohya sd-scripts' train_network.py (v0.10.1). It trains nothing.

It reads the same --config_file / --dataset_config files, prints the same console lines
(the "running training / 学習開始" block, tqdm's "steps" bar with avr_loss on stderr,
"epoch N/M", validation bars, "saving checkpoint: PATH", sample generation, "model saved."),
and writes the same files: {output_name}-{epoch:06d}.safetensors with ss_* metadata, the
final {output_name}.safetensors, {output_name}-{epoch:06d}-state/train_state.json,
sample/{output_name}_e{epoch:06d}_{index:02d}_{YYYYmmddHHMMSS}_{seed}.png, and TensorBoard
events in {logging_dir}/{log_prefix}{YYYYmmddHHMMSS}/network_train/ (loss/current,
loss/average, loss/epoch_average, loss/validation/epoch_average, lr/unet).

The loss is a made-up curve: training loss falls steadily while validation loss is lowest at
SD_DOUBLE_BEST_EPOCH (default: 60% of the epochs), the situation the report must reveal.
Environment switches for tests:
  SD_DOUBLE_NAN_AT_STEP=k       loss becomes NaN from global step k
  SD_DOUBLE_EXPLODE_AT_STEP=k   loss doubles every step from step k
  SD_DOUBLE_CRASH_AT_STEP=k     raise at step k; SD_DOUBLE_CRASH_KIND=oom (default) | runtime
  SD_DOUBLE_STEP_SECONDS=s      sleep per step (for Ctrl-C tests)
  SD_DOUBLE_TQDM_MININTERVAL=s  tqdm's redraw interval (upstream uses tqdm's default 0.1)
  SD_DOUBLE_PAUSE_AFTER_STEP=k:s  sleep s seconds after global step k (a slow step, as on a CPU)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time

from library import config_util, train_util
from library.train_util import log

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

IMAGE_EXTENSIONS = [".png", ".jpg", ".jpeg", ".webp", ".bmp", ".PNG", ".JPG", ".JPEG", ".WEBP", ".BMP"]


class OutOfMemoryError(RuntimeError):
    """Printed like torch.OutOfMemoryError."""


OutOfMemoryError.__module__ = "torch"


def env_int(name: str):
    value = os.environ.get(name)
    return int(value) if value else None


class NetworkTrainer:
    is_sdxl = False
    base_model_version = "sd_v1"
    architecture = "stable-diffusion-v1/lora"

    def assert_extra_args(self, args) -> None:
        steps = self.bucket_reso_steps
        assert steps % 64 == 0, (
            f"bucket_reso_steps is {steps}. it must be divisible by "
            f"64.\nbucket_reso_stepsが{steps}です。64で割り切れる必要があります"
        )

    # -- dataset

    def load_datasets(self, args):
        log(f"Loading dataset config from {args.dataset_config}")
        with open(args.dataset_config, "rb") as handle:
            user_config = tomllib.load(handle)
        config_util.sanitize_user_config(user_config)
        general = user_config.get("general", {})
        train_images, val_images, batches = 0, 0, 0
        self.bucket_reso_steps = general.get("bucket_reso_steps", 64)
        self.dataset_dirs = {}
        for dataset in user_config["datasets"]:
            self.bucket_reso_steps = dataset.get("bucket_reso_steps", self.bucket_reso_steps)
            split = dataset.get("validation_split", general.get("validation_split", 0.0))
            batch_size = dataset.get("batch_size", general.get("batch_size", 1))
            ds_train = 0
            for subset in dataset["subsets"]:
                files = [f for f in os.listdir(subset["image_dir"]) if os.path.splitext(f)[1] in IMAGE_EXTENSIONS]
                n_train = math.ceil(len(files) * (1 - split)) if split > 0 else len(files)
                n_val = (
                    round(len(files) * split) if split > 0 else 0
                )  # split_train_val(): the last round(n * split) images
                repeats = subset.get("num_repeats", dataset.get("num_repeats", general.get("num_repeats", 1)))
                log(f"found directory {subset['image_dir']} contains {n_train} image files")
                if not n_train:  # DreamBoothDataset: every dataset also gets a training copy, empty at split 1.0
                    log(
                        f"ignore subset with image_dir='{subset['image_dir']}': no images found / "
                        "画像が見つからないためサブセットを無視します",
                        "WARNING",
                    )
                ds_train += n_train * repeats
                val_images += n_val
                if n_train:
                    self.dataset_dirs[os.path.basename(subset["image_dir"])] = {
                        "n_repeats": repeats,
                        "img_count": n_train,
                    }
            train_images += ds_train
            batches += math.ceil(ds_train / batch_size)
        return train_images, val_images, batches

    def check_model(self, args) -> None:
        name = args.pretrained_model_name_or_path
        if os.path.isfile(name):
            log(f"load StableDiffusion checkpoint: {name}")
            return
        log(f"load Diffusers pretrained models: {name}")
        if not os.path.isdir(name):
            log(
                "model is not found as a file or in Hugging Face, perhaps file name is wrong? / "
                "指定したモデル名のファイル、"
                f"またはHugging Faceのモデルが見つかりません。ファイル名が誤っているかもしれません: {name}",
                "ERROR",
            )
            raise OSError(
                f"{name} is not a local folder and is not a valid model identifier listed on 'https://huggingface.co/models'"
            )

    # -- outputs

    def metadata(self, args, steps: int, epoch: int, num_epochs: int, train_images: int) -> dict:
        meta = {
            "ss_session_id": "1234567",
            "ss_training_started_at": str(self.started),
            "ss_output_name": args.output_name,
            "ss_learning_rate": str(args.learning_rate),
            "ss_text_encoder_lr": str(args.text_encoder_lr),
            "ss_unet_lr": str(args.unet_lr),
            "ss_num_train_images": str(train_images),
            "ss_num_epochs": str(num_epochs),
            "ss_epoch": str(epoch),
            "ss_steps": str(steps),
            "ss_network_module": args.network_module,
            "ss_network_dim": str(args.network_dim),
            "ss_network_alpha": str(args.network_alpha),
            "ss_sd_model_name": os.path.basename(args.pretrained_model_name_or_path),
            "ss_base_model_version": self.base_model_version,
            "ss_mixed_precision": args.mixed_precision,
            "ss_seed": str(args.seed),
            "ss_training_finished_at": str(time.time()),
            "ss_dataset_dirs": json.dumps(self.dataset_dirs),
            "ss_tag_frequency": json.dumps({}),
            "modelspec.architecture": self.architecture,
            "modelspec.implementation": "https://github.com/kohya-ss/sd-scripts",
            "modelspec.title": args.metadata_title or args.output_name,
        }
        if args.metadata_trigger_phrase:
            meta["modelspec.trigger_phrase"] = args.metadata_trigger_phrase
        return meta

    def save_model(self, args, name: str, steps: int, epoch: int, num_epochs: int, train_images: int) -> None:
        import numpy as np
        from safetensors.numpy import save_file

        os.makedirs(args.output_dir, exist_ok=True)
        ckpt_file = os.path.join(args.output_dir, name)
        print(f"\nsaving checkpoint: {ckpt_file}", flush=True)
        rng = np.random.default_rng(epoch)
        dim = args.network_dim or 4
        tensors = {
            "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": rng.standard_normal((dim, 8)).astype(
                np.float16
            ),
            "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": np.zeros((8, dim), dtype=np.float16),
            "lora_unet_down_blocks_0_attentions_0_proj_in.alpha": np.array(args.network_alpha, dtype=np.float16),
        }
        save_file(tensors, ckpt_file, metadata=self.metadata(args, steps, epoch, num_epochs, train_images))

    def save_state(self, args, epoch_no: int, step: int) -> None:
        log("")
        log(f"saving state at epoch {epoch_no}")
        state_dir = os.path.join(args.output_dir, train_util.EPOCH_STATE_NAME.format(args.output_name, epoch_no))
        os.makedirs(state_dir, exist_ok=True)
        train_state_file = os.path.join(state_dir, "train_state.json")
        log(f"save train state to {train_state_file} at epoch {epoch_no} step {step}")
        with open(train_state_file, "w", encoding="utf-8") as f:
            json.dump({"current_epoch": epoch_no, "current_step": step}, f)
        keep = args.save_last_n_epochs_state or args.save_last_n_epochs
        if keep is not None:
            old = os.path.join(
                args.output_dir,
                train_util.EPOCH_STATE_NAME.format(args.output_name, epoch_no - args.save_every_n_epochs * keep),
            )
            if os.path.exists(old):
                log(f"removing old state: {old}")
                import shutil

                shutil.rmtree(old)

    def sample_images(self, args, epoch, steps) -> None:
        if steps == 0:
            if not args.sample_at_first:
                return
        else:
            if args.sample_every_n_steps is None and args.sample_every_n_epochs is None:
                return
            if args.sample_every_n_epochs is not None:
                if epoch is None or epoch % args.sample_every_n_epochs != 0:
                    return
            elif steps % args.sample_every_n_steps != 0 or epoch is not None:
                return
        log("")
        log(f"generating sample images at step / サンプル画像生成 ステップ: {steps}")
        if not os.path.isfile(args.sample_prompts):
            log(f"No prompt file / プロンプトファイルがありません: {args.sample_prompts}", "ERROR")
            return
        from PIL import Image, ImageDraw

        with open(args.sample_prompts, encoding="utf-8") as f:
            lines = f.readlines()
        prompts = [line.strip() for line in lines if len(line.strip()) > 0 and line[0] != "#"]
        save_dir = args.output_dir + "/sample"
        os.makedirs(save_dir, exist_ok=True)
        for i, line in enumerate(prompts):
            prompt_dict = train_util.line_to_prompt_dict(line)
            log(f"prompt: {prompt_dict['prompt']}")
            log(f"negative_prompt: {prompt_dict.get('negative_prompt')}")
            log(f"height: {prompt_dict.get('height', 512)}")
            log(f"width: {prompt_dict.get('width', 512)}")
            log(f"sample_steps: {prompt_dict.get('sample_steps', 30)}")
            log(f"scale: {prompt_dict.get('scale', 7.5)}")
            log(f"sample_sampler: {args.sample_sampler}")
            seed = prompt_dict.get("seed")
            if seed is not None:
                log(f"seed: {seed}")
            shade = 40 + (epoch or 0) * 40 % 200
            image = Image.new("RGB", (64, 64), (shade, 90 + i * 30 % 160, 200 - shade // 2))
            ImageDraw.Draw(image).text((4, 4), f"e{epoch} p{i}", fill=(255, 255, 255))
            image.save(os.path.join(save_dir, train_util.sample_image_name(args.output_name, epoch, steps, i, seed)))

    # -- losses

    def train_loss(self, step: int, total: int, rng: random.Random) -> float:
        nan_at, explode_at = env_int("SD_DOUBLE_NAN_AT_STEP"), env_int("SD_DOUBLE_EXPLODE_AT_STEP")
        if nan_at is not None and step >= nan_at:
            return float("nan")
        loss = 0.06 + 0.08 * math.exp(-3.0 * step / max(total, 1)) + rng.uniform(-0.01, 0.01)
        if explode_at is not None and step >= explode_at:
            loss *= 2.0 ** (step - explode_at + 1)
        return loss

    def val_loss(self, epoch: int, num_epochs: int, timestep: int) -> float:
        best = env_int("SD_DOUBLE_BEST_EPOCH") or max(1, round(0.6 * num_epochs))
        return 0.1 + 0.01 * (epoch - best) ** 2 + (timestep - 500) / 100000.0

    # -- the loop

    def train(self, args) -> None:
        from tqdm import tqdm

        self.started = time.time()
        train_util.setup_logging(args.console_log_simple)
        if args.seed is None:
            args.seed = random.randint(0, 2**32)
        train_images, val_images, batches = self.load_datasets(args)
        if batches == 0:
            log(
                "No data found. Please verify arguments (train_data_dir must be the parent of folders with images) / "
                "画像がありません。"
                "引数指定を確認してください（train_data_dirには画像があるフォルダではなく、画像があるフォルダの親フォルダを指定する必要があります）",
                "ERROR",
            )
            return
        self.assert_extra_args(args)
        self.check_model(args)
        steps_per_epoch = math.ceil(batches / args.gradient_accumulation_steps)
        if args.max_train_epochs is not None:
            args.max_train_steps = args.max_train_epochs * steps_per_epoch
            print(
                f"override steps. steps for {args.max_train_epochs} epochs is / 指定エポックまでのステップ数: "
                f"{args.max_train_steps}"
            )
        num_train_epochs = math.ceil(args.max_train_steps / steps_per_epoch)
        initial_step = 0
        if args.resume:
            state_file = os.path.join(args.resume, "train_state.json")
            with open(state_file, encoding="utf-8") as f:
                data = json.load(f)
            initial_step = data["current_step"]
            log(f"load train state from {state_file}: {data}")
        epoch_to_start = initial_step // steps_per_epoch if initial_step > 0 else 0

        print("running training / 学習開始")
        print(f"  num train images * repeats / 学習画像の数×繰り返し回数: {train_images}")
        print(f"  num validation images * repeats / 学習画像の数×繰り返し回数: {val_images}")
        print("  num reg images / 正則化画像の数: 0")
        print(f"  num batches per epoch / 1epochのバッチ数: {batches}")
        print(f"  num epochs / epoch数: {num_train_epochs}")
        print("  batch size per device / バッチサイズ: 1")
        print(f"  gradient accumulation steps / 勾配を合計するステップ数 = {args.gradient_accumulation_steps}")
        print(f"  total optimization steps / 学習ステップ数: {args.max_train_steps}", flush=True)

        writer = TensorBoardDouble(args) if args.logging_dir and args.log_with in (None, "tensorboard", "all") else None
        crash_at, step_seconds = (
            env_int("SD_DOUBLE_CRASH_AT_STEP"),
            float(os.environ.get("SD_DOUBLE_STEP_SECONDS") or 0),
        )
        pause = (os.environ.get("SD_DOUBLE_PAUSE_AFTER_STEP") or "0:0").split(":")
        pause_step, pause_seconds = int(pause[0]), float(pause[1])
        rng = random.Random(args.seed)
        loss_recorder, val_recorder = train_util.LossRecorder(), train_util.LossRecorder()
        global_step = 0  # upstream restarts the step count on --resume (only the epoch number is skipped)
        self.sample_images(args, 0, global_step)
        mininterval = float(os.environ.get("SD_DOUBLE_TQDM_MININTERVAL", "0.1"))
        progress_bar = tqdm(range(args.max_train_steps - 0), smoothing=0, desc="steps", mininterval=mininterval)
        for epoch in range(epoch_to_start, num_train_epochs):
            print(f"\nepoch {epoch + 1}/{num_train_epochs}\n", flush=True)
            for step in range(steps_per_epoch):
                if step_seconds:
                    time.sleep(step_seconds)
                if crash_at is not None and epoch * steps_per_epoch + step >= crash_at:
                    if os.environ.get("SD_DOUBLE_CRASH_KIND", "oom") == "oom":
                        raise OutOfMemoryError(
                            "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 7.79 GiB of "
                            "which 1.02 GiB is free."
                        )
                    raise RuntimeError(
                        "Expected all tensors to be on the same device, but found at least two devices, cuda:0 and cpu!"
                    )
                current_loss = self.train_loss(epoch * steps_per_epoch + step, args.max_train_steps, rng)
                progress_bar.update(1)
                global_step += 1
                loss_recorder.add(epoch=epoch, step=step, loss=current_loss)
                avr_loss = loss_recorder.moving_average
                progress_bar.set_postfix(**{"avr_loss": avr_loss})
                if pause_step == global_step:
                    time.sleep(pause_seconds)
                if writer:
                    lr = args.unet_lr or args.learning_rate
                    writer.log({"loss/current": current_loss, "loss/average": avr_loss, "lr/unet": lr}, global_step)
                if global_step >= args.max_train_steps:
                    break
            if val_images:
                self.validate(
                    args, epoch, num_train_epochs, val_images, val_recorder, writer, loss_recorder, mininterval
                )
            if writer:
                writer.log({"loss/epoch_average": loss_recorder.moving_average}, epoch + 1)
            if args.save_every_n_epochs is not None:
                if (epoch + 1) % args.save_every_n_epochs == 0 and (epoch + 1) < num_train_epochs:
                    name = train_util.EPOCH_FILE_NAME.format(args.output_name, epoch + 1) + ".safetensors"
                    self.save_model(args, name, global_step, epoch + 1, num_train_epochs, train_images)
                    if args.save_state:
                        self.save_state(args, epoch + 1, (epoch + 1) * steps_per_epoch)
            self.sample_images(args, epoch + 1, global_step)
        if writer:
            writer.close()
        self.save_model(
            args, f"{args.output_name}.safetensors", global_step, num_train_epochs, num_train_epochs, train_images
        )
        log("model saved.")

    def validate(self, args, epoch, num_epochs, val_images, recorder, writer, loss_recorder, mininterval) -> None:
        from tqdm import tqdm

        timesteps = [200, 400, 600, 800]  # upstream: 4 fixed timesteps between min and max
        bar = tqdm(
            range(val_images * len(timesteps)), smoothing=0, desc="epoch validation steps", mininterval=mininterval
        )
        index = 0
        for _ in range(val_images):
            for timestep in timesteps:
                recorder.add(epoch=epoch, step=index, loss=self.val_loss(epoch + 1, num_epochs, timestep))
                bar.update(1)
                bar.set_postfix({"val_epoch_avg_loss": recorder.moving_average, "timestep": timestep})
                index += 1
        if writer:
            writer.log(
                {"loss/validation/epoch_average": recorder.moving_average,
                 "loss/validation/epoch_divergence": recorder.moving_average - loss_recorder.moving_average},
                epoch + 1,
            )  # fmt: skip


class TensorBoardDouble:
    """Writes scalar events like accelerate's TensorBoardTracker (torch.utils.tensorboard), without torch."""

    def __init__(self, args) -> None:
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        prefix = args.log_prefix or ""
        logdir = os.path.join(
            args.logging_dir,
            prefix + time.strftime("%Y%m%d%H%M%S", time.localtime()),
            args.log_tracker_name or "network_train",
        )
        os.makedirs(logdir, exist_ok=True)
        self.writer = EventFileWriter(logdir)

    def log(self, values: dict, step: int) -> None:
        from tensorboard.compat.proto import event_pb2, summary_pb2

        summary = summary_pb2.Summary(
            value=[summary_pb2.Summary.Value(tag=k, simple_value=float(v)) for k, v in values.items()]
        )
        self.writer.add_event(event_pb2.Event(wall_time=time.time(), step=step, summary=summary))

    def close(self) -> None:
        self.writer.close()


def setup_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    train_util.add_logging_arguments(parser)
    train_util.add_sd_models_arguments(parser)
    train_util.add_training_arguments(parser)
    train_util.add_optimizer_arguments(parser)
    parser.add_argument("--no_metadata", action="store_true")
    parser.add_argument("--save_model_as", type=str, default="safetensors", choices=[None, "ckpt", "pt", "safetensors"])
    parser.add_argument("--unet_lr", type=float, default=None)
    parser.add_argument("--text_encoder_lr", type=float, default=None, nargs="*")
    parser.add_argument("--network_weights", type=str, default=None)
    parser.add_argument("--network_module", type=str, default=None)
    parser.add_argument("--network_dim", type=int, default=None)
    parser.add_argument("--network_alpha", type=float, default=1)
    parser.add_argument("--network_dropout", type=float, default=None)
    parser.add_argument("--network_args", type=str, default=None, nargs="*")
    parser.add_argument("--network_train_unet_only", action="store_true")
    parser.add_argument("--network_train_text_encoder_only", action="store_true")
    parser.add_argument("--training_comment", type=str, default=None)
    parser.add_argument("--dim_from_weights", action="store_true")
    parser.add_argument("--scale_weight_norms", type=float, default=None)
    parser.add_argument("--no_half_vae", action="store_true")
    parser.add_argument("--validation_seed", type=int, default=None)
    parser.add_argument("--validation_split", type=float, default=0.0)
    parser.add_argument("--validate_every_n_steps", type=int, default=None)
    parser.add_argument("--validate_every_n_epochs", type=int, default=None)
    parser.add_argument("--max_validation_steps", type=int, default=None)
    return parser


if __name__ == "__main__":
    parser = setup_parser()
    args = parser.parse_args()
    args = train_util.read_config_from_file(args, parser)
    NetworkTrainer().train(args)
    sys.exit(0)
