"""Make every Hugging Face entry point fail fast instead of retrying the network.

The embedded path never needs the hub. Users who do want the hub (pretrained models) can set
`HF_HUB_OFFLINE=0` before importing acd_env; these are `setdefault`s.
"""

import os

for _key, _value in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "WANDB_MODE": "disabled",
    "TOKENIZERS_PARALLELISM": "false",
    "JAX_PLATFORMS": "cpu",
}.items():
    os.environ.setdefault(_key, _value)
