"""Named student sizes and depth up-scaling (XLarge -> XXLarge).

Published parameter counts (USAD / USAD 2.0): Small ~25 M, Base ~97 M, Large ~336 M,
XLarge ~695 M (25 Hz), XXLarge ~1.04 B. ``tests/train/test_sizes.py`` checks ours are within 5 %.
"""

from __future__ import annotations

import re

import torch

from .errors import ConfigError
from .model import StudentConfig

SIZES: dict[str, StudentConfig] = {
    "tiny": StudentConfig(
        dim=64, depth=2, heads=4, conv_channels=16, pos_kernel=16, pos_groups=4, rel_buckets=32
    ),
    # A student that trains on a 2-core CPU in minutes (the built-in demo), ~1 M parameters.
    "mini": StudentConfig(
        dim=128, depth=4, heads=4, conv_channels=32, pos_kernel=32, pos_groups=8, rel_buckets=32
    ),
    "small": StudentConfig(dim=384, depth=12, heads=6, conv_channels=160),
    "base": StudentConfig(dim=768, depth=12, heads=12, conv_channels=256),
    "large": StudentConfig(dim=1024, depth=24, heads=16, conv_channels=512),
    "xlarge": StudentConfig(dim=1280, depth=32, heads=20, conv_channels=1024, stride=4),
    "xxlarge": StudentConfig(dim=1280, depth=48, heads=20, conv_channels=1024, stride=4),
}

PUBLISHED_PARAMS = {"small": 25e6, "base": 97e6, "large": 336e6, "xlarge": 695e6, "xxlarge": 1.04e9}


def student_config(size: str, **overrides) -> StudentConfig:
    try:
        base = SIZES[size.lower()]
    except KeyError:
        raise ConfigError(f"unknown student size {size!r} (known: {', '.join(SIZES)})") from None
    return StudentConfig(**{**base.to_json(), **overrides})


def upscale_layers(depth: int, keep: int) -> list[int]:
    """Block indices of the source stacked by depth up-scaling: its first ``keep`` then its last
    ``keep`` (XLarge 32 -> XXLarge 48: blocks 0..23 then 8..31)."""
    if not 0 < keep <= depth:
        raise ConfigError(f"depth up-scaling keeps {keep} of {depth} blocks")
    return list(range(keep)) + list(range(depth - keep, depth))


_BLOCK = re.compile(r"^blocks\.(\d+)\.(.*)$")


def depth_upscale(
    state: dict[str, torch.Tensor], depth: int, keep: int = 24
) -> dict[str, torch.Tensor]:
    """A student state dict of ``2 * keep`` blocks made from one of ``depth`` blocks."""
    src = upscale_layers(depth, keep)
    out = {k: v.clone() for k, v in state.items() if not _BLOCK.match(k)}
    for k, v in state.items():
        m = _BLOCK.match(k)
        if m is None:
            continue
        i, rest = int(m.group(1)), m.group(2)
        for new, old in enumerate(src):
            if old == i:
                out[f"blocks.{new}.{rest}"] = v.clone()
    return out
