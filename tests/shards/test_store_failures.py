"""The object store failing under a bank (down, closed endpoint, objects lost): a StorageError or
FileNotFoundError naming the bank URL, the operation and the object - one CLI line, not a
traceback."""

from __future__ import annotations

import socket

import pytest

from audistill.shards.bank import Bank
from audistill.shards.errors import BankError, StorageError
from audistill.shards.reader import BankReader

from .helpers import make_bank

pytestmark = pytest.mark.s3

FAST = {
    "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 2}
}  # one try, not botocore's 5


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_closed_endpoint_is_a_storage_error_naming_the_bank_and_the_object(s3_bucket):
    prefix, opts = s3_bucket
    make_bank(f"{prefix}/b", "zarr", storage_options=opts, shards=1)
    dead = {
        **opts,
        **FAST,
        "client_kwargs": {
            **opts["client_kwargs"],
            "endpoint_url": f"http://127.0.0.1:{_closed_port()}",
        },
    }
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    with pytest.raises(
        StorageError, match=rf"{prefix}/b: reading bank.json failed: EndpointConnectionError"
    ):
        Bank.open(f"{prefix}/b", dead)


def test_a_store_stopped_mid_run_is_a_storage_error(tmp_path):
    moto_server = pytest.importorskip("moto.server")
    import boto3
    import s3fs

    port = _closed_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    ep = f"http://127.0.0.1:{port}"
    boto3.client(
        "s3",
        endpoint_url=ep,
        region_name="us-east-1",
        aws_access_key_id="t",
        aws_secret_access_key="t",
    ).create_bucket(Bucket="down")
    opts = {
        "key": "t",
        "secret": "t",
        "client_kwargs": {"endpoint_url": ep, "region_name": "us-east-1"},
        **FAST,
    }
    s3fs.S3FileSystem.clear_instance_cache()
    bank, _ = make_bank("s3://down/b", "zarr", storage_options=opts, shards=1)
    reader = BankReader(bank)
    server.stop()
    with pytest.raises(StorageError, match="s3://down/b: .*failed"):
        list(reader)
    with pytest.raises(StorageError, match="s3://down/b: reading bank.json failed"):
        Bank.open("s3://down/b", opts)


def test_objects_the_store_lost_are_named(s3_bucket):
    prefix, opts = s3_bucket
    bank, _ = make_bank(f"{prefix}/b", "webdataset", storage_options=opts, shards=2)
    lost = "commits/shard-00001.json"
    others = ["commits/shard-00000.json", lost]
    bank.fs.remove_file(lost)
    with pytest.raises(FileNotFoundError, match=f"{prefix}/b: {lost}"):
        list(bank.fs.read_many(others))  # concurrent reads: the one that failed is named
    tar = next(rel for rel in bank.shard_files("shard-00000") if rel.endswith(".tar"))
    bank.fs.remove_file(tar)
    with pytest.raises(BankError, match="shard-00000"):
        list(BankReader(bank, shards=["shard-00000"]))
    with pytest.raises(BankError, match="shard-00001"):
        list(BankReader(bank, shards=["shard-00001"]))


def test_a_run_does_not_write_a_catalog_after_the_store_lost_it(s3_bucket):
    prefix, opts = s3_bucket
    bank, _ = make_bank(f"{prefix}/b", "zarr", storage_options=opts, shards=1)
    bank.fs.fs.rm(bank.fs.root, recursive=True)  # the store lost everything under the bank
    with pytest.raises(StorageError, match="bank.json is gone from the store"):
        bank.save_catalog()
    assert not bank.fs.exists("bank.json")


def test_the_cli_says_a_closed_endpoint_in_one_line(s3_bucket, monkeypatch, capsys):
    import json
    import sys

    from audistill.tools.cli import main

    prefix, opts = s3_bucket
    dead = {
        **opts,
        **FAST,
        "client_kwargs": {
            **opts["client_kwargs"],
            "endpoint_url": f"http://127.0.0.1:{_closed_port()}",
        },
    }
    monkeypatch.setattr(
        sys,
        "argv",
        ["audistill", "shards", "info", f"{prefix}/b", "--storage-options", json.dumps(dead)],
    )
    with pytest.raises(SystemExit) as e:
        main()
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"{prefix}/b: reading bank.json failed: EndpointConnectionError" in err
