"""TEST DOUBLE of kohya sd-scripts' library/train_util.py (v0.10.1).

Only what the double trainer needs: the argparse options (same names, types and defaults as
upstream's add_*_arguments for the options Vidstyle writes), read_config_from_file (sections
flattened one level, unknown keys kept silently, command line wins), the output names, the
sample prompt line format and file naming, and the LossRecorder moving average.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

EPOCH_STATE_NAME = "{}-{:06d}-state"
EPOCH_FILE_NAME = "{}-{:06d}"
LAST_STATE_NAME = "{}-state"


def int_or_float(value):
    if value.endswith("%"):
        return float(value[:-1]) / 100.0
    try:
        return int(value)
    except ValueError:
        return float(value)


def add_sd_models_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--v2", action="store_true")
    parser.add_argument("--v_parameterization", action="store_true")
    parser.add_argument("--pretrained_model_name_or_path", type=str, default=None)
    parser.add_argument("--tokenizer_cache_dir", type=str, default=None)


def add_logging_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--console_log_level", type=str, default=None, choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
    )
    parser.add_argument("--console_log_file", type=str, default=None)
    parser.add_argument("--console_log_simple", action="store_true")


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--save_state", action="store_true")
    parser.add_argument("--save_state_on_train_end", action="store_true")
    parser.add_argument("--mem_eff_attn", action="store_true")
    parser.add_argument("--xformers", action="store_true")
    parser.add_argument("--sdpa", action="store_true")
    parser.add_argument("--gradient_checkpointing", action="store_true")
    parser.add_argument("--full_fp16", action="store_true")
    parser.add_argument("--full_bf16", action="store_true")
    parser.add_argument("--fp8_base", action="store_true")
    parser.add_argument("--lowram", action="store_true")
    parser.add_argument("--highvram", action="store_true")
    parser.add_argument("--cache_latents", action="store_true")
    parser.add_argument("--cache_latents_to_disk", action="store_true")
    parser.add_argument("--persistent_data_loader_workers", action="store_true")
    parser.add_argument("--sample_at_first", action="store_true")
    parser.add_argument("--zero_terminal_snr", action="store_true")
    parser.add_argument("--noise_offset_random_strength", action="store_true")
    parser.add_argument("--output_dir", type=str, default=None)
    parser.add_argument("--output_name", type=str, default=None)
    parser.add_argument("--save_precision", type=str, default=None, choices=[None, "float", "fp16", "bf16"])
    parser.add_argument("--save_every_n_epochs", type=int, default=None)
    parser.add_argument("--save_every_n_steps", type=int, default=None)
    parser.add_argument("--save_last_n_epochs", type=int, default=None)
    parser.add_argument("--save_last_n_epochs_state", type=int, default=None)
    parser.add_argument("--resume", type=str, default=None)
    parser.add_argument("--max_token_length", type=int, default=None, choices=[None, 150, 225])
    parser.add_argument("--vae", type=str, default=None)
    parser.add_argument("--vae_batch_size", type=int, default=1)
    parser.add_argument("--max_train_steps", type=int, default=1600)
    parser.add_argument("--max_train_epochs", type=int, default=None)
    parser.add_argument("--max_data_loader_n_workers", type=int, default=8)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--gradient_accumulation_steps", type=int, default=1)
    parser.add_argument("--mixed_precision", type=str, default="no", choices=["no", "fp16", "bf16"])
    parser.add_argument("--clip_skip", type=int, default=None)
    parser.add_argument("--logging_dir", type=str, default=None)
    parser.add_argument("--log_with", type=str, default=None, choices=["tensorboard", "wandb", "all"])
    parser.add_argument("--log_prefix", type=str, default=None)
    parser.add_argument("--log_tracker_name", type=str, default=None)
    parser.add_argument("--noise_offset", type=float, default=None)
    parser.add_argument("--multires_noise_iterations", type=int, default=None)
    parser.add_argument("--multires_noise_discount", type=float, default=0.3)
    parser.add_argument("--ip_noise_gamma", type=float, default=None)
    parser.add_argument("--min_timestep", type=int, default=None)
    parser.add_argument("--max_timestep", type=int, default=None)
    parser.add_argument("--loss_type", type=str, default="l2", choices=["l1", "l2", "huber", "smooth_l1"])
    parser.add_argument("--huber_schedule", type=str, default="snr", choices=["constant", "exponential", "snr"])
    parser.add_argument("--huber_c", type=float, default=0.1)
    parser.add_argument("--sample_every_n_steps", type=int, default=None)
    parser.add_argument("--sample_every_n_epochs", type=int, default=None)
    parser.add_argument("--sample_prompts", type=str, default=None)
    parser.add_argument("--sample_sampler", type=str, default="ddim")
    parser.add_argument("--config_file", type=str, default=None)
    parser.add_argument("--output_config", action="store_true")
    parser.add_argument("--prior_loss_weight", type=float, default=1.0)
    parser.add_argument("--dataset_config", type=str, default=None)
    parser.add_argument("--min_snr_gamma", type=float, default=None)
    parser.add_argument("--scale_v_pred_loss_like_noise_pred", action="store_true")
    parser.add_argument("--v_pred_like_loss", type=float, default=None)
    parser.add_argument("--debiased_estimation_loss", action="store_true")
    parser.add_argument("--metadata_title", type=str, default=None)
    parser.add_argument("--metadata_author", type=str, default=None)
    parser.add_argument("--metadata_description", type=str, default=None)
    parser.add_argument("--metadata_trigger_phrase", type=str, default=None)
    parser.add_argument("--metadata_tags", type=str, default=None)


def add_optimizer_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--optimizer_type", type=str, default="")
    parser.add_argument("--learning_rate", type=float, default=2.0e-6)
    parser.add_argument("--max_grad_norm", type=float, default=1.0)
    parser.add_argument("--optimizer_args", type=str, default=None, nargs="*")
    parser.add_argument("--lr_scheduler", type=str, default="constant")
    parser.add_argument("--lr_warmup_steps", type=int_or_float, default=0)
    parser.add_argument("--lr_scheduler_num_cycles", type=int, default=1)
    parser.add_argument("--lr_scheduler_power", type=float, default=1)
    parser.add_argument("--lr_scheduler_min_lr_ratio", type=float, default=None)


def read_config_from_file(args: argparse.Namespace, parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Upstream behaviour: sections flattened one level; unknown keys are kept without a word."""
    if not args.config_file:
        return args
    config_path = args.config_file if args.config_file.endswith(".toml") else args.config_file + ".toml"
    if not os.path.exists(config_path):
        print(f"{config_path} not found.")
        sys.exit(1)
    log(f"Loading settings from {config_path}...")
    with open(config_path, "rb") as handle:
        config = tomllib.load(handle)
    flat = {}
    for name, section in config.items():
        if isinstance(section, dict):
            flat.update(section)
        else:
            flat[name] = section
    args = parser.parse_args(namespace=argparse.Namespace(**flat))
    args.config_file = os.path.splitext(args.config_file)[0]
    return args


_SIMPLE_LOG = True


def setup_logging(simple: bool) -> None:
    global _SIMPLE_LOG
    _SIMPLE_LOG = simple


def log(message: str, level: str = "INFO") -> None:
    """Upstream logs through `logging`: plain '%(message)s' on stdout with --console_log_simple,
    otherwise rich's columns (time, level, message, file:line) on stderr."""
    if _SIMPLE_LOG:
        print(message, flush=True)
    else:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        print(f"{stamp} {level:<8} {message:<60} train_util.py:1234", file=sys.stderr, flush=True)


class LossRecorder:
    """Moving average over the last epoch's worth of steps (upstream's definition)."""

    def __init__(self) -> None:
        self.loss_list: list[float] = []
        self.loss_total = 0.0

    def add(self, *, epoch: int, step: int, loss: float) -> None:
        if epoch == 0:
            self.loss_list.append(loss)
        else:
            while len(self.loss_list) <= step:
                self.loss_list.append(0.0)
            self.loss_total -= self.loss_list[step]
            self.loss_list[step] = loss
        self.loss_total += loss

    @property
    def moving_average(self) -> float:
        return self.loss_total / len(self.loss_list) if self.loss_list else 0


def line_to_prompt_dict(line: str) -> dict:
    prompt_args = line.split(" --")
    prompt_dict = {"prompt": prompt_args[0]}
    for parg in prompt_args:
        for pattern, key, kind in (
            (r"w (\d+)", "width", int),
            (r"h (\d+)", "height", int),
            (r"d (\d+)", "seed", int),
            (r"s (\d+)", "sample_steps", int),
            (r"l ([\d\.]+)", "scale", float),
            (r"n (.+)", "negative_prompt", str),
        ):
            m = re.match(pattern, parg, re.IGNORECASE)
            if m:
                prompt_dict[key] = kind(m.group(1))
    return prompt_dict


def sample_image_name(output_name: str | None, epoch: int | None, steps: int, index: int, seed: int | None) -> str:
    ts_str = time.strftime("%Y%m%d%H%M%S", time.localtime())
    num_suffix = f"e{epoch:06d}" if epoch is not None else f"{steps:06d}"
    seed_suffix = "" if seed is None else f"_{seed}"
    return f"{'' if output_name is None else output_name + '_'}{num_suffix}_{index:02d}_{ts_str}{seed_suffix}.png"
