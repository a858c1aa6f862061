"""Teacher spec files (TOML or YAML): which teachers to run, on what, and how to store them.

A file holds a list of teachers (``[[teacher]]`` tables in TOML, a ``teachers:`` list in YAML)::

    [[teacher]]
    name = "wavlm"                      # key-safe name in the bank
    source = "microsoft/wavlm-base-plus"  # hub id or local folder (or a plugin's model name)
    kind = "hf"                         # "hf" (transformers) or a plugin entry-point name
    revision = ""                       # hub revision; recorded in the catalog
    layers = "sparse:4"                 # "all", "sparse:K" or a list of hidden-state indices
    dtype = "bf16"                      # run dtype on GPU: bf16 | fp16 | fp32 (CPU runs fp32)
    max_seconds = 30.0
    home_domain = "speech"
    domains = ["speech"]                # domains it is run on; [] = all
    frame_policy = "native"             # or "50hz" (resampled to the student's frame rate)
    codec = "int8-delta"                # the default (fewest bits, no measurable loss)
    codec_params = {}
    trust_remote_code = false
    options = {}                        # adapter/plugin options
    precision = "autocast"              # or "weights": weights cast to dtype (within tolerance)
    compile = "off"                     # or a torch.compile mode, e.g. "default", "reduce-overhead"
    bucket_seconds = 0.0                # > 0: batch lengths padded to a multiple (graphs reused)

Every problem in a file is reported at once in one :class:`SpecError`.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal, get_args

from audistill.shards.codecs import get_codec
from audistill.shards.errors import BankError
from audistill.shards.segments import check_key

from .errors import SpecError

# Decided by the target-precision study (`audistill demo`, report section 3): int8-delta stores
# ~4.6-5.6 bits per value, and the student trained from it matched the float32 one (validation
# loss against float32 targets -0.1 %). Fitted per layer on the first shard at extraction.
# The `--full` run (600 steps, 3 seeds) found mvq (0.23 b/v) lossless on the probes too; it stays
# opt-in: it drops 4-37 % of each layer's variance and +3.5 % validation loss (README). The
# report's rule now says the same: a default keeps 99 % of every layer's variance (demo/claims.py;
# int8-delta loses at most 0.05 %, int4-group up to 8 %, measured by `shards compare`).
DEFAULT_CODEC = "int8-delta"

Dtype = Literal["bf16", "fp16", "fp32"]
FramePolicy = Literal["native", "50hz"]
DTYPES: tuple[str, ...] = get_args(Dtype)
FRAME_POLICIES: tuple[str, ...] = get_args(FramePolicy)
PRECISIONS = ("autocast", "weights")
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
_SPARSE = re.compile(r"^sparse:(\d+)$")


@dataclass(frozen=True)
class TeacherSpec:
    name: str
    source: str
    kind: str = "hf"
    revision: str = ""
    layers: str | tuple[int, ...] = "all"
    dtype: Dtype = "bf16"  # on CUDA; elsewhere teachers run float32
    max_seconds: float = 30.0
    home_domain: str = "unknown"
    domains: tuple[str, ...] = ()
    frame_policy: FramePolicy = "native"
    codec: str = DEFAULT_CODEC
    codec_params: dict = field(default_factory=dict)
    trust_remote_code: bool = False
    options: dict = field(default_factory=dict)
    # How the forward runs (speed levers; the features stay within the run dtype's tolerance):
    # "autocast" keeps float32 weights under autocast, "weights" casts the weights to `dtype`
    # (on the CPU too); `compile` is off or a torch.compile mode ("reduce-overhead": CUDA graphs);
    # `bucket_seconds` > 0 pads a batch's length up to a multiple of it (padding-invariant teachers)
    # so that compiled graphs and CUDA graphs are reused.
    precision: str = "autocast"
    compile: str = "off"
    bucket_seconds: float = 0.0

    def runs_on(self, domain: str) -> bool:
        """Whether this teacher is configured for ``domain`` (an empty list = every domain)."""
        return not self.domains or domain in self.domains

    def make_codec(self):
        return get_codec(self.codec, **self.codec_params)

    def to_json(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["layers"] = d["layers"] if isinstance(d["layers"], str) else list(d["layers"])
        d["domains"] = list(d["domains"])
        return d


def resolve_layers(layers: str | tuple[int, ...] | list[int], num_blocks: int) -> list[int]:
    """Hidden-state indices to keep for a model with ``num_blocks`` blocks (L; L+1 hidden states).

    ``all`` = 0..L; ``sparse:K`` = floor(k*L/K) for k = 1..K (USAD's evenly spaced layers);
    an explicit list is checked against 0..L.
    """
    if isinstance(layers, str):
        if layers == "all":
            return list(range(num_blocks + 1))
        m = _SPARSE.match(layers)
        if not m or not 1 <= int(m.group(1)) <= num_blocks:
            raise SpecError(
                f"layers {layers!r}: use 'all', 'sparse:K' with 1 <= K <= {num_blocks}, or a list"
            )
        k = int(m.group(1))
        return sorted({(i * num_blocks) // k for i in range(1, k + 1)})
    bad = [x for x in layers if not 0 <= int(x) <= num_blocks]
    if bad:
        raise SpecError(f"layers {bad} out of range: the model has hidden states 0..{num_blocks}")
    return sorted({int(x) for x in layers})


def _check_layers(value, where: str, errs: list[str]) -> str | tuple[int, ...] | None:
    if isinstance(value, str):
        if value == "all" or _SPARSE.match(value) and int(value.split(":")[1]) >= 1:
            return value
        errs.append(
            f"{where}: layers {value!r} is not 'all', 'sparse:K' (K >= 1) or a list of ints"
        )
        return None
    if (
        isinstance(value, list)
        and value
        and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in value)
    ):
        return tuple(value)
    errs.append(
        f"{where}: layers must be 'all', 'sparse:K' or a non-empty list of ints >= 0, not {value!r}"
    )
    return None


_TYPES = {
    "name": str,
    "source": str,
    "kind": str,
    "revision": str,
    "dtype": str,
    "home_domain": str,
    "frame_policy": str,
    "codec": str,
    "codec_params": dict,
    "trust_remote_code": bool,
    "options": dict,
}


def spec_from_dict(d: dict, where: str, errs: list[str]) -> TeacherSpec | None:
    """Validate one teacher table, appending every problem to ``errs``; None when invalid."""
    if not isinstance(d, dict):
        errs.append(f"{where}: expected a table, got {type(d).__name__}")
        return None
    n0 = len(errs)
    known = {f.name for f in fields(TeacherSpec)}
    for k in sorted(set(d) - known):
        errs.append(f"{where}: unknown key {k!r} (known: {', '.join(sorted(known))})")
    for k in ("name", "source"):
        if k not in d:
            errs.append(f"{where}: missing {k!r}")
    for k, t in _TYPES.items():
        if k in d and not isinstance(d[k], t):
            errs.append(f"{where}: {k} must be {t.__name__}, not {type(d[k]).__name__}")
    kw = {k: v for k, v in d.items() if k in known}
    if isinstance(d.get("name"), str):
        try:
            check_key(d["name"], "teacher name")
        except BankError as e:
            errs.append(f"{where}: {e}")
    if "layers" in d:
        kw["layers"] = _check_layers(d["layers"], where, errs)
    if d.get("dtype", "bf16") not in DTYPES:
        errs.append(f"{where}: dtype {d.get('dtype')!r} not in {DTYPES}")
    if d.get("frame_policy", "native") not in FRAME_POLICIES:
        errs.append(f"{where}: frame_policy {d.get('frame_policy')!r} not in {FRAME_POLICIES}")
    ms = d.get("max_seconds", 30.0)
    if isinstance(ms, bool) or not isinstance(ms, int | float) or ms <= 0:
        errs.append(f"{where}: max_seconds must be a positive number, not {ms!r}")
    else:
        kw["max_seconds"] = float(ms)
    doms = d.get("domains", [])
    if not isinstance(doms, list) or not all(isinstance(x, str) and x for x in doms):
        errs.append(f"{where}: domains must be a list of names, not {doms!r}")
    else:
        kw["domains"] = tuple(doms)
    if isinstance(d.get("codec", DEFAULT_CODEC), str) and isinstance(
        d.get("codec_params", {}), dict
    ):
        try:
            get_codec(d.get("codec", DEFAULT_CODEC), **d.get("codec_params", {}))
        except BankError as e:
            errs.append(f"{where}: {e}")
    _check_speed_levers(d, where, errs, kw)
    if len(errs) > n0:
        return None
    return TeacherSpec(**kw)


def _check_speed_levers(d: dict, where: str, errs: list[str], kw: dict) -> None:
    if d.get("precision", "autocast") not in PRECISIONS:
        errs.append(f"{where}: precision {d.get('precision')!r} not in {PRECISIONS}")
    if d.get("compile", "off") not in COMPILE_MODES:
        errs.append(f"{where}: compile {d.get('compile')!r} not in {COMPILE_MODES}")
    b = d.get("bucket_seconds", 0.0)
    if isinstance(b, bool) or not isinstance(b, int | float) or b < 0:
        errs.append(f"{where}: bucket_seconds must be a number >= 0, not {b!r}")
    else:
        kw["bucket_seconds"] = float(b)


def parse_specs(data, where: str) -> list[TeacherSpec]:
    """Teacher specs from parsed TOML/YAML data; every problem raised at once."""
    if isinstance(data, dict):
        tables = data.get("teacher", data.get("teachers"))
        extra = sorted(set(data) - {"teacher", "teachers"})
        if extra:
            raise SpecError(
                f"{where}: unknown top-level key(s) {extra}; put teachers under [[teacher]]"
            )
    else:
        tables = data
    if not isinstance(tables, list) or not tables:
        raise SpecError(
            f"{where}: no teachers: expected [[teacher]] tables (TOML) or a 'teachers:' list (YAML)"
        )
    errs: list[str] = []
    specs = []
    for i, d in enumerate(tables):
        label = (
            d.get("name") if isinstance(d, dict) and isinstance(d.get("name"), str) else f"#{i + 1}"
        )
        s = spec_from_dict(d, f"teacher {label}", errs)
        if s is not None:
            specs.append(s)
    names = [s.name for s in specs]
    for n in sorted({n for n in names if names.count(n) > 1}):
        errs.append(f"teacher {n}: name used more than once")
    if errs:
        raise SpecError(f"{where}: {len(errs)} problem(s): " + "; ".join(errs))
    return specs


def load_teacher_specs(path: str | Path) -> list[TeacherSpec]:
    """Read and validate a TOML (``.toml``) or YAML (``.yaml``/``.yml``) teacher spec file."""
    p = Path(path)
    if not p.is_file():
        raise SpecError(f"teacher spec file {p} does not exist")
    text = p.read_text()
    try:
        if p.suffix == ".toml":
            data = tomllib.loads(text)
        elif p.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            raise SpecError(f"{p}: use a .toml, .yaml or .yml teacher spec file")
    except (tomllib.TOMLDecodeError, ValueError) as e:
        if isinstance(e, SpecError):
            raise
        raise SpecError(f"{p} is not valid {p.suffix[1:].upper()}: {e}") from e
    except Exception as e:  # yaml.YAMLError is not a ValueError
        raise SpecError(f"{p} is not valid YAML: {e}") from e
    return parse_specs(data, str(p))
