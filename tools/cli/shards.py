"""`audistill shards ...`: inspect, verify, convert, export and summarize banks."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from .options import BankArg, JsonOpt, StorageOpt, parse_storage_options

shards_app = typer.Typer(
    no_args_is_help=True, help="Inspect, verify, convert and export feature banks."
)
console = Console(width=None if Console().is_terminal else 160)


def _parse_layers(spec: str | None) -> list[int] | None:
    if spec is None or spec.strip().lower() in ("", "all"):
        return None
    try:
        return sorted({int(x) for x in spec.split(",") if x.strip()})
    except ValueError:
        raise typer.BadParameter(
            f"--layers takes comma-separated integers or 'all', not {spec!r}"
        ) from None


def _opts(root: str, storage_options: str) -> dict | None:
    """--storage-options for ``root`` when it is a URL (a local path takes none)."""
    return (
        parse_storage_options(storage_options)
        if "://" in root and not root.startswith("file://")
        else None
    )


def _gib(n: float) -> str:
    return f"{n / 2**30:.3f} GiB" if n >= 2**27 else f"{n / 2**20:.2f} MiB"


@shards_app.command()
def info(bank: BankArg, json_out: JsonOpt = False, storage_options: StorageOpt = "") -> None:
    """Teachers, layers, codecs, hours per domain, segments, bytes and measured bits per value."""
    from audistill.shards.info import bank_info

    d = bank_info(bank, _opts(bank, storage_options))
    if json_out:
        print(json.dumps(d))
        return
    hours = ", ".join(f"{k} {v:.3f} h" for k, v in d["hours_per_domain"].items()) or "none"
    console.print(
        f"[bold]{d['bank']}[/] layout {d['layout']}: {d['shards']} shards, {d['segments']} "
        "segments, "
        f"{d['hours']:.3f} h ({hours}), {_gib(d['bytes'])}"
    )
    table = Table(
        "teacher",
        "layer",
        "codec",
        "dim",
        "rate Hz",
        "frames",
        "bytes",
        "bits/value",
        "home",
        "domains",
    )
    for name, t in d["teachers"].items():
        for layer, lay in t["layers"].items():
            bpv = "-" if lay["bits_per_value"] is None else f"{lay['bits_per_value']:.2f}"
            table.add_row(
                name,
                layer,
                t["codec"]["name"],
                str(t["dim"]),
                f"{t['frame_rate']:g}",
                str(lay["frames"]),
                _gib(lay["bytes"]),
                bpv,
                t["home_domain"],
                ",".join(t["domains"]),
            )
    console.print(table)


@shards_app.command()
def verify(
    bank: BankArg,
    json_out: JsonOpt = False,
    quick: Annotated[bool, typer.Option("--quick", help="Sizes only, no sha256.")] = False,
    workers: Annotated[
        int,
        typer.Option(
            min=0, help="Shards checked at once (0: 16 on an object store, 2 on a local disk)."
        ),
    ] = 0,
    storage_options: StorageOpt = "",
) -> None:
    """Check every file against its commit record; exit 1 naming every broken shard."""
    from audistill.shards.verify import verify_bank

    report = verify_bank(
        bank,
        checksums=not quick,
        storage_options=_opts(bank, storage_options),
        workers=workers or None,
    )
    if json_out:
        print(json.dumps(report.to_json()))
    else:
        for shard, problems in report.broken.items():
            for p in problems:
                console.print(f"[red]BROKEN[/] {shard}: {p}", highlight=False)
        status = "[green]intact[/]" if report.ok else f"[red]{len(report.broken)} broken[/]"
        console.print(
            f"{report.bank}: {report.shards_checked} shards, {report.files_checked} files, "
            f"{_gib(report.bytes_checked)} checked: {status}"
        )
    if not report.ok:
        raise typer.Exit(1)


ToLayoutOpt = Annotated[
    str | None, typer.Option("--to", help="Layout of the new bank (default: same).")
]
CopyWorkersOpt = Annotated[
    int,
    typer.Option(
        "--workers",
        min=0,
        help="Shards copied at once (0: 8 when a side is an object store, else 2).",
    ),
]


def _copied(copy, bank: str, out: str, storage_options: str, workers: int, *args, **kw) -> None:
    """Run a bank copy (``copy_bank`` / ``recode_bank``) with the CLI's stores, workers and
    progress lines, and say what it wrote."""
    target = copy(
        bank,
        out,
        *args,
        src_options=_opts(bank, storage_options),
        dst_options=_opts(out, storage_options),
        workers=workers or None,
        progress=lambda s: console.print(f"shard {s}", highlight=False),
        **kw,
    )
    console.print(
        f"wrote {target.root}: {len(target.catalog.shards)} shards, {_gib(target.catalog.bytes)}"
    )


@shards_app.command()
def convert(
    bank: BankArg,
    out: Annotated[str, typer.Argument(help="New bank root.")],
    to: Annotated[str, typer.Option("--to", help="zarr or webdataset")],
    workers: CopyWorkersOpt = 0,
    storage_options: StorageOpt = "",
) -> None:
    """Copy a bank into the other layout, exactly (stored codec parts are copied, not
    re-encoded)."""
    from audistill.shards.copy import copy_bank
    from audistill.shards.layouts import layout_names

    if to not in layout_names():
        raise typer.BadParameter(f"--to must be one of {', '.join(layout_names())}")
    _copied(copy_bank, bank, out, storage_options, workers, layout=to)


@shards_app.command()
def export(
    bank: BankArg,
    out: Annotated[str, typer.Argument(help="New, smaller bank root.")],
    teacher: Annotated[list[str], typer.Option("--teacher", help="Teacher to keep (repeat).")],
    layers: Annotated[
        str | None,
        typer.Option("--layers", help="Layers to keep, e.g. 3,6,9,12 (all teachers given)."),
    ] = None,
    to: ToLayoutOpt = None,
    workers: CopyWorkersOpt = 0,
    storage_options: StorageOpt = "",
) -> None:
    """A smaller bank with only the teachers and layers one student needs (local or object
    store)."""
    from audistill.shards.copy import copy_bank

    want = {t: _parse_layers(layers) for t in teacher}
    _copied(copy_bank, bank, out, storage_options, workers, layout=to, teachers=want)


@shards_app.command()
def recode(
    bank: BankArg,
    out: Annotated[str, typer.Argument(help="New bank root.")],
    codec: Annotated[
        str, typer.Option("--codec", help="Codec of the new bank (see `shards codecs`).")
    ],
    teacher: Annotated[
        list[str] | None, typer.Option("--teacher", help="Teacher to keep (repeat; default all).")
    ] = None,
    to: ToLayoutOpt = None,
    workers: CopyWorkersOpt = 0,
    storage_options: StorageOpt = "",
) -> None:
    """Copy a bank with its features re-encoded by another codec (fitted codecs are fitted here)."""
    from audistill.shards.copy import recode_bank

    teachers = {t: None for t in teacher} if teacher else None
    _copied(recode_bank, bank, out, storage_options, workers, codec, layout=to, teachers=teachers)


@shards_app.command()
def compare(
    bank: BankArg,
    other: Annotated[str, typer.Argument(help="A recode or convert of BANK (the same segments).")],
    teacher: Annotated[
        list[str] | None,
        typer.Option("--teacher", help="Teacher to compare (repeat; default all in common)."),
    ] = None,
    frames: Annotated[
        int, typer.Option("--frames", min=1, help="Frames compared per teacher layer, at most.")
    ] = 40000,
    json_out: JsonOpt = False,
    storage_options: StorageOpt = "",
) -> None:
    """What OTHER's features lost against BANK's, per teacher layer: the share of variance lost,
    relative L2, per-channel error and frame cosine (e.g. after `shards recode --codec mvq`)."""
    from audistill.shards.fidelity import compare_banks

    res = compare_banks(
        bank,
        other,
        teachers={t: None for t in teacher} if teacher else None,
        max_frames=frames,
        reference_options=_opts(bank, storage_options),
        other_options=_opts(other, storage_options),
    )
    if json_out:
        print(json.dumps(res))
        return
    table = Table("teacher/layer", "frames", "variance lost", "rel. L2", "channel err.", "cosine")
    for key, r in res.items():
        table.add_row(
            key,
            str(r["frames"]),
            f"{r['variance_lost']:.5f}",
            f"{r['rel_l2']:.5f}",
            f"{r['chan_err']:.5f}",
            f"{r['cosine']:.5f}",
        )
    console.print(table)


@shards_app.command()
def codecs() -> None:
    """List the feature codecs this audistill knows."""
    from audistill.shards.codecs import codec_names, get_codec

    table = Table("codec", "version", "lossless", "fitted", "about")
    for name in codec_names():
        cls = type(get_codec(name))  # every codec has defaults for all its parameters
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        table.add_row(
            name,
            str(cls.version),
            "yes" if cls.lossless else "",
            "yes" if cls.needs_fit else "",
            doc,
        )
    console.print(table)


@shards_app.command()
def stats(
    bank: BankArg,
    scheduler: Annotated[
        str | None,
        typer.Option("--scheduler", help="Dask scheduler address, or threads/processes."),
    ] = None,
    json_out: JsonOpt = False,
    storage_options: StorageOpt = "",
) -> None:
    """Per-layer channel mean / std / absmax over the whole bank (Dask), stored in the catalog."""
    from audistill.shards.stats import compute_stats

    s = compute_stats(bank, scheduler=scheduler, storage_options=_opts(bank, storage_options))
    if json_out:
        print(
            json.dumps({t: {k: {"count": v["count"]} for k, v in d.items()} for t, d in s.items()})
        )
        return
    table = Table("teacher", "layer", "frames", "mean |mean|", "mean std", "max absmax")
    for t, d in s.items():
        for layer, v in d.items():
            table.add_row(
                t,
                layer,
                str(v["count"]),
                f"{sum(abs(x) for x in v['mean']) / len(v['mean']):.4g}",
                f"{sum(v['std']) / len(v['std']):.4g}",
                f"{max(v['absmax']):.4g}",
            )
    console.print(table)


@shards_app.command()
def sync(bank: BankArg, storage_options: StorageOpt = "") -> None:
    """Merge commit records of shards written by other processes (SLURM slices) into the catalog,
    and the slices' error files (errors.d/) into errors.jsonl. Run it when no slice is running."""
    from audistill.extract.run import merge_errors
    from audistill.shards.bank import Bank

    b = Bank.open(bank, _opts(bank, storage_options))
    added = b.sync_catalog()
    merged = merge_errors(b)
    console.print(
        f"{len(added)} shard(s) added to the catalog: {', '.join(added) or '-'}; "
        f"{merged} slice error file(s) merged into errors.jsonl",
        highlight=False,
    )


@shards_app.command()
def rebuild(bank: BankArg, storage_options: StorageOpt = "") -> None:
    """Make a lost bank.json again from the commit records (each holds its shard's entry and its
    teachers' records); refused, naming why, where that cannot give back the same catalog."""
    from audistill.shards.bank import Bank

    b = Bank.rebuild(bank, _opts(bank, storage_options))
    cat = b.catalog
    console.print(
        f"rebuilt {b.root}/bank.json: {len(cat.shards)} shard(s), teachers "
        f"{', '.join(sorted(cat.teachers))}; "
        "per-layer statistics are not kept in commit records: `audistill shards stats` computes "
        "them "
        "again",
        highlight=False,
    )


@shards_app.command()
def clean(bank: BankArg, storage_options: StorageOpt = "") -> None:
    """Remove temporary files left by crashed writers (run only when no writer is running)."""
    from audistill.shards.bank import Bank

    gone = Bank.open(bank, _opts(bank, storage_options)).remove_temporaries()
    console.print(f"removed {len(gone)} temporary file(s)/folder(s)")
