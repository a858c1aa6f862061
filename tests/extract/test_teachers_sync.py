"""A teacher's forward queues on the device without waiting for it (no host sync), checked on the
CPU.

On CUDA, ``torch.cuda.set_sync_debug_mode`` finds syncs (tests/extract/test_gpu.py). Here the
teacher runs on the ``meta`` device (tensors without data, the stand-in for the accelerator; the
batch's lengths stay on the host, as in extraction) under a dispatch mode that records every
operator which, on a CUDA tensor, makes the host wait: reading a value (``item``, ``tolist``,
``if t:``), data-dependent shapes (``nonzero``, boolean-mask indexing, ``masked_select``,
``unique``), assignment through tensor indices (``x[idx] = v``), and copies between host and device
other than the pinned, queued ones of ``host_to_device``.
"""

import contextlib
import traceback

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from audistill.extract.spec import TeacherSpec
from audistill.extract.teachers import load_teacher

DEVICE = "meta"
READS_OR_DATA_SHAPED = {
    "_local_scalar_dense",
    "nonzero",
    "masked_select",
    "unique",
    "_unique",
    "_unique2",
    "unique_consecutive",
    "unique_dim",
    "repeat_interleave",
    "masked_scatter",
    "masked_scatter_",
    "_assert_async",
    "is_nonzero",
    "equal",
    "allclose",
}
INDEXING = {"index", "_unsafe_index"}
ASSIGNING = {"index_put", "index_put_", "_index_put_impl_", "_unsafe_index_put"}
COPIES = {"_to_copy", "copy_", "_copy_from", "_copy_from_and_resize", "to"}


def _tensors(args):
    for a in args:
        if isinstance(a, torch.Tensor):
            yield a
        elif isinstance(a, list | tuple):
            yield from (x for x in a if isinstance(x, torch.Tensor))


class SyncRecorder(TorchDispatchMode):
    """Records (operator, where in the Python source) for each operator that would sync on CUDA."""

    def __init__(self):
        super().__init__()
        self.syncs: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        ts = list(_tensors(list(args) + list(kwargs.values())))
        devices = {t.device.type for t in ts}
        if kwargs.get("device") is not None:
            devices.add(torch.device(kwargs["device"]).type)
        if DEVICE in devices and self._syncs(name, args, devices):
            frames = [f for f in traceback.extract_stack()[:-1] if "torch/" not in f.filename]
            self.syncs.append(f"{func} at {frames[-1].filename.split('/')[-1]}:{frames[-1].lineno}")
        return func(*args, **kwargs)

    @staticmethod
    def _syncs(name: str, args, devices: set[str]) -> bool:
        if name in READS_OR_DATA_SHAPED:
            return True
        if name in ASSIGNING:  # boolean masks: masked_fill_ with the value read on the host; tensor
            return True  # indices: found syncing on CUDA by the sync debug mode
        if name in INDEXING:  # boolean masks become nonzero's data-dependent indices
            return any(t.dtype == torch.bool for t in _tensors(args[1:2]))
        if name in COPIES and "cpu" in devices:  # host <-> device, not through host_to_device
            return not any(f.name == "host_to_device" for f in traceback.extract_stack())
        return False


def _batch():
    lengths = torch.tensor([16000, 23456, 8000, 23456])  # host, as the pipeline hands them
    return torch.zeros(4, 23456, device=DEVICE), lengths


@pytest.mark.parametrize("kind", ["wavlm", "wav2vec2", "hubert", "data2vec", "whisper", "ast"])
def test_teacher_forward_never_syncs(tiny_dir, kind):
    t = load_teacher(TeacherSpec(name=kind, source=str(tiny_dir(kind)), layers="all"), DEVICE)
    wave, lengths = _batch()
    rec = SyncRecorder()
    with rec:
        feats, flen = t.extract(wave, lengths)
    assert rec.syncs == []
    assert flen.device.type == "cpu" and flen.tolist() == [t.num_frames(int(n)) for n in lengths]
    assert all(f.device.type == DEVICE and f.shape[:2] == (4, max(flen)) for f in feats.values())


@pytest.mark.parametrize("kind", ["wavlm", "wav2vec2"])
def test_the_recorder_sees_transformers_own_masking(tiny_dir, kind):
    """The check is not vacuous: transformers' forward with a padding mask, as loaded, syncs (an
    index assignment for the frame mask, boolean indexing in the encoder)."""
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(tiny_dir(kind))).eval().to(DEVICE)
    wave, lengths = _batch()
    mask = (torch.arange(wave.shape[1])[None] < lengths[:, None]).long().to(DEVICE)
    rec = SyncRecorder()
    # a meta tensor cannot be read: wav2vec 2.0's forward stops at its mask's `.all()` (recorded)
    with rec, torch.no_grad(), contextlib.suppress(RuntimeError):
        model(wave, attention_mask=mask)
    assert sum("index_put" in s for s in rec.syncs) >= 2, rec.syncs  # frame mask, encoder zeroing
