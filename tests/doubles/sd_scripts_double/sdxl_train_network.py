"""TEST DOUBLE of kohya sd-scripts' sdxl_train_network.py (v0.10.1): the SD1.5 double with
SDXL's checks (bucket steps divisible by 32, text-encoder caching only when training the unet
alone) and SDXL's options and metadata. It trains nothing; see train_network.py here."""

from __future__ import annotations

import sys

import train_network
from library import train_util


class SdxlNetworkTrainer(train_network.NetworkTrainer):
    is_sdxl = True
    base_model_version = "sdxl_base_v1-0"
    architecture = "stable-diffusion-xl-v1-base/lora"

    def assert_extra_args(self, args) -> None:
        assert not args.v2, "v2 cannot be enabled in SDXL training / SDXL学習ではv2を有効にすることはできません"
        assert args.network_train_unet_only or not args.cache_text_encoder_outputs, (
            "network for Text Encoder cannot be trained with caching Text Encoder outputs / Text "
            "Encoderの出力をキャッシュしながらText Encoderのネットワークを学習することはできません"
        )
        steps = self.bucket_reso_steps
        assert steps % 32 == 0, (
            f"bucket_reso_steps is {steps}. it must be divisible by "
            f"32.\nbucket_reso_stepsが{steps}です。32で割り切れる必要があります"
        )


def setup_parser():
    parser = train_network.setup_parser()
    parser.add_argument("--cache_text_encoder_outputs", action="store_true")
    parser.add_argument("--cache_text_encoder_outputs_to_disk", action="store_true")
    parser.add_argument("--disable_mmap_load_safetensors", action="store_true")
    return parser


if __name__ == "__main__":
    parser = setup_parser()
    args = parser.parse_args()
    args = train_util.read_config_from_file(args, parser)
    SdxlNetworkTrainer().train(args)
    sys.exit(0)
