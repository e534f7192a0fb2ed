"""Latency measurement on the seq2seq protocol, HAT-style, with a device fingerprint.

One *sample* is the time to translate one input batch the way HAT measures it: encode the
source (batch ``B``), expand the encoder output to ``B × beam`` rows (the beam emulated as
batch rows), then run ``tgt_len`` incremental decoder steps with the cache, output projection
included; no EOS stop, no beam bookkeeping. ``warmup`` untimed samples come first (every call
is a fresh model or view, so warm-up follows every change of subnet), then ``runs`` timed
ones. On CPU the thread count is fixed for the measurement; on CUDA each sample is timed both
with CUDA events (device time) and with the wall clock around a synchronize (the reported
latency: batch-1 decoding is bound by kernel launches, which events do not see).

The *runtime* runs the model: ``"torch"`` (the static `Transformer` itself) or
``"onnxruntime"`` (the model exported to ONNX in a temporary directory, `automoe.onnx_export`,
and run by `automoe.onnx_runtime.OrtTransformer` on CPU with the protocol's intra-op thread
count): the same samples, inputs and statistics, in the runtime that serves the model. The
runtime is part of the protocol key and of the device fingerprint, so measurements of the
two never mix.

Statistics: median (the headline), HAT's 10–90 % trimmed mean (of the totals, and HAT's own
sum of the encoder and decoder trimmed means), mean, std, p10/p90, coefficient of variation;
the raw samples are kept.

One subnet as ``automoe latency measure`` measures it (random or supernet weights, through
the cache) is `automoe.costs.subnet_latency`. torch is imported where a measurement runs, so
the protocol loads without it.
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from automoe.costs.metrics import summarize, trimmed_mean
from automoe.devices import torch_threads
from search_spaces.checks import check_ints
from supernet.contracts import SubnetModel, missing_members
from supernet.tokens import BOS_ID, DEFAULT_VOCAB_SIZE, EOS_ID, PAD_ID

if TYPE_CHECKING:
    import torch


__all__ = [
    "LatencyProtocol",
    "LatencyResult",
    "measure_latency",
    "device_fingerprint",
    "protocol_fingerprint",
    "RUNTIMES",
    "fingerprint_id",
    "trimmed_mean",
    "summarize",
    "make_inputs",
]

# Names of the torch dtypes a protocol may ask for (torch itself is imported where needed).
DTYPES = ("float32", "float16", "bfloat16")
RUNTIMES = ("torch", "onnxruntime")
_FIRST_WORD_ID = EOS_ID + 1  # ids below are specials


@dataclass(frozen=True)
class LatencyProtocol:
    """How a latency is measured (defaults: HAT's WMT protocol on CPU).

    Attributes:
        device: "cpu" or "cuda" / "cuda:N".
        threads: CPU threads for torch during the measurement (None: the current setting).
        dtype: model and activation dtype name ("float32", "float16", "bfloat16").
        batch: sentences per input batch.
        src_len: source tokens per synthetic sentence (the last is EOS).
        tgt_len: incremental decoder steps per sample.
        beam: encoder output rows are repeated ``beam`` times for the decoder.
        warmup: untimed samples before timing (after every change of subnet).
        runs: timed samples (per input batch when sentences are given).
        vocab_size: the model's vocabulary (synthetic token ids are drawn below it).
        seed: seeds the synthetic token ids.
        sentences: optional real source sentences (token ids, EOS-terminated), batched
            ``batch`` at a time and padded; MoE routing, hence latency, depends on content.
        clock: "wall" (``time.perf_counter``; the latency a user waits) or, on CPU with
            one thread, "thread_cpu" (``time.thread_time``: the CPU time of the measuring
            thread, which time-slicing by other processes on a shared machine does not
            inflate; it is not a latency, but ranks and predicts subnets far more stably).
        weights: where the weights come from: "random" (random init, seeded by ``seed``)
            or an identifier of trained weights (e.g. "supernet:<sha256 of the checkpoint>");
            part of the cache key because MoE routing depends on the weights.
        runtime: "torch", or "onnxruntime" (the model exported to ONNX and run by ONNX
            Runtime; CPU and float32 only).
    """

    device: str = "cpu"
    threads: int | None = None
    dtype: str = "float32"
    batch: int = 1
    src_len: int = 30
    tgt_len: int = 30
    beam: int = 5
    warmup: int = 5
    runs: int = 20
    vocab_size: int = DEFAULT_VOCAB_SIZE
    seed: int = 0
    sentences: tuple[tuple[int, ...], ...] | None = field(default=None, repr=False)
    weights: str = "random"
    clock: str = "wall"
    runtime: str = "torch"

    def __post_init__(self) -> None:
        check_ints("LatencyProtocol", self, {"batch": 1, "src_len": 1, "tgt_len": 1, "beam": 1,
                                             "runs": 1, "vocab_size": 1, "warmup": 0})
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"LatencyProtocol: 'threads' must be >= 1 or None, got {self.threads!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"LatencyProtocol: 'dtype' {self.dtype!r} not in {sorted(DTYPES)}")
        if self.device != "cpu" and not self.device.startswith("cuda"):
            raise ValueError(f"LatencyProtocol: 'device' must be 'cpu' or 'cuda[:N]', got {self.device!r}")
        if self.clock not in ("wall", "thread_cpu"):
            raise ValueError(f"LatencyProtocol: 'clock' must be 'wall' or 'thread_cpu', got {self.clock!r}")
        if self.clock == "thread_cpu" and (self.device != "cpu" or self.threads != 1):
            raise ValueError("LatencyProtocol: clock 'thread_cpu' needs device 'cpu' and threads=1 "
                             "(other threads' work would not be counted)")
        if self.runtime not in RUNTIMES:
            raise ValueError(f"LatencyProtocol: 'runtime' {self.runtime!r} not in {list(RUNTIMES)}")
        if self.runtime != "torch" and (self.device != "cpu" or self.dtype != "float32"):
            raise ValueError(f"LatencyProtocol: runtime {self.runtime!r} measures on device "
                             f"'cpu' in float32 only, got {self.device!r} / {self.dtype!r}")
        if self.vocab_size <= _FIRST_WORD_ID:
            raise ValueError(f"LatencyProtocol: 'vocab_size' {self.vocab_size} leaves no word ids")
        if self.sentences is not None:
            if not self.sentences or any(not s for s in self.sentences):
                raise ValueError("LatencyProtocol: 'sentences' must be non-empty token-id lists")
            bad = [t for s in self.sentences for t in s if not 0 <= t < self.vocab_size]
            if bad:
                raise ValueError(
                    f"LatencyProtocol: sentence token id {bad[0]} outside the vocab 0..{self.vocab_size - 1}"
                )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; real sentences are represented by their count and a digest. The
        runtime is recorded when it is not torch (torch protocols keep the keys they had
        before runtimes existed, so stored measurements stay found)."""
        d = {k: v for k, v in asdict(self).items() if k != "sentences"}
        if self.runtime == "torch":
            del d["runtime"]
        if self.sentences is not None:
            d["n_sentences"] = len(self.sentences)
            d["sentences_sha256"] = hashlib.sha256(
                json.dumps(self.sentences, separators=(",", ":")).encode()
            ).hexdigest()[:16]
        return d

    def key(self) -> str:
        """Stable 16-hex hash of `to_dict` (the protocol part of the cache key)."""
        canon = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canon.encode()).hexdigest()[:16]

    def describe(self) -> str:
        src = (f"{len(self.sentences)} real sentences" if self.sentences is not None
               else f"{self.src_len} source tokens")
        threads = f", {self.threads} threads" if self.threads else ""
        weights = "random weights" if self.weights == "random" else f"weights {self.weights}"
        clock = "" if self.clock == "wall" else ", thread CPU time (not wall clock)"
        runtime = "" if self.runtime == "torch" else f"{self.runtime} (exported ONNX graphs), "
        return (
            f"{runtime}{self.device}{threads}, {self.dtype}, batch {self.batch}, {src}, beam {self.beam} as "
            f"batch rows, {self.tgt_len} incremental decoder steps with cache (output projection "
            f"incl.), {self.warmup} warm-up + {self.runs} timed runs, {weights}{clock}"
        )


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown-cpu"


def device_fingerprint(device: str = "cpu", dtype: str = "float32", threads: int | None = None,
                       runtime: str = "torch") -> dict[str, Any]:
    """What makes two latencies comparable: device model, torch version, threads, dtype and,
    for a runtime other than torch, the runtime, its version and how the export runs MoE
    layers.

    Measurements with different fingerprints are never mixed (cache, datasets, predictors).
    """
    import torch

    fp: dict[str, Any] = {
        "device_type": "cuda" if device.startswith("cuda") else "cpu",
        "torch": torch.__version__,
        "dtype": dtype,
        "threads": threads if threads is not None else torch.get_num_threads(),
        "machine": platform.machine(),
    }
    if fp["device_type"] == "cuda":
        index = torch.device(device).index or 0
        fp["device_name"] = torch.cuda.get_device_name(index)
        fp["cuda"] = torch.version.cuda
        fp["capability"] = ".".join(map(str, torch.cuda.get_device_capability(index)))
    else:
        fp["device_name"] = _cpu_model()
    if runtime == "onnxruntime":
        from automoe.onnx_export import MOE_DISPATCH, require_onnx

        require_onnx()
        import onnxruntime

        fp["runtime"] = runtime
        fp["onnxruntime"] = onnxruntime.__version__
        fp["onnx_moe_dispatch"] = MOE_DISPATCH
    elif runtime != "torch":
        raise ValueError(f"device_fingerprint: runtime {runtime!r} not in {list(RUNTIMES)}")
    return fp


def protocol_fingerprint(protocol: LatencyProtocol) -> dict[str, Any]:
    """`device_fingerprint` of the device, dtype, threads and runtime ``protocol`` names."""
    return device_fingerprint(protocol.device, protocol.dtype, protocol.threads,
                              protocol.runtime)


def fingerprint_id(fingerprint: dict[str, Any]) -> str:
    """16-hex content hash of a fingerprint."""
    canon = json.dumps(fingerprint, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canon.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class LatencyResult:
    """One measurement: raw samples (ms) and the context that makes them comparable.

    ``total_ms[i] = encoder_ms[i] + decoder_ms[i]`` (wall clock); ``device_ms`` holds the
    CUDA-event time of each sample (empty on CPU).
    """

    encoder_ms: tuple[float, ...]
    decoder_ms: tuple[float, ...]
    device_ms: tuple[float, ...]
    protocol: dict[str, Any]
    fingerprint: dict[str, Any]
    subnet_key: str | None = None
    measure_s: float = 0.0  # wall time of the whole call, warm-up included

    @property
    def total_ms(self) -> tuple[float, ...]:
        return tuple(e + d for e, d in zip(self.encoder_ms, self.decoder_ms, strict=True))

    @property
    def stats(self) -> dict[str, float]:
        return summarize(self.total_ms)

    @property
    def latency_ms(self) -> float:
        """The headline number: median total latency."""
        return self.stats["median"]

    @property
    def hat_ms(self) -> float:
        """HAT's number: trimmed mean of encoder times + trimmed mean of decoder times."""
        return trimmed_mean(self.encoder_ms) + trimmed_mean(self.decoder_ms)

    @property
    def fingerprint_id(self) -> str:
        return fingerprint_id(self.fingerprint)

    @property
    def protocol_key(self) -> str:
        canon = json.dumps(self.protocol, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canon.encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        s = self.stats
        return {
            "subnet_key": self.subnet_key,
            "latency_ms": s["median"],
            "trimmed_mean_ms": s["trimmed_mean"],
            "hat_ms": self.hat_ms,
            "mean_ms": s["mean"],
            "std_ms": s["std"],
            "p10_ms": s["p10"],
            "p90_ms": s["p90"],
            "cv": s["cv"],
            "encoder_median_ms": float(np.median(self.encoder_ms)),
            "decoder_median_ms": float(np.median(self.decoder_ms)),
            "runs": s["n"],
            "measure_s": self.measure_s,
            "encoder_ms": list(self.encoder_ms),
            "decoder_ms": list(self.decoder_ms),
            "device_ms": list(self.device_ms),
            "protocol": self.protocol,
            "protocol_key": self.protocol_key,
            "fingerprint": self.fingerprint,
            "fingerprint_id": self.fingerprint_id,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LatencyResult:
        return cls(
            encoder_ms=tuple(float(v) for v in d["encoder_ms"]),
            decoder_ms=tuple(float(v) for v in d["decoder_ms"]),
            device_ms=tuple(float(v) for v in d.get("device_ms", ())),
            protocol=dict(d["protocol"]),
            fingerprint=dict(d["fingerprint"]),
            subnet_key=d.get("subnet_key"),
            measure_s=float(d.get("measure_s", 0.0)),
        )


def make_inputs(protocol: LatencyProtocol) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Input batches: ``(src [B, S], prev [B·beam, tgt_len])`` on CPU, int64.

    Synthetic sentences are random word ids (a fixed ``torch.Generator``) ending with EOS;
    real ones are padded with PAD to the batch's longest. Decoder inputs are BOS followed
    by random word ids (forced length, no EOS dependence).
    """
    import torch

    gen = torch.Generator().manual_seed(protocol.seed)
    if protocol.sentences is None:
        src = torch.randint(_FIRST_WORD_ID, protocol.vocab_size, (protocol.batch, protocol.src_len), generator=gen)
        src[:, -1] = EOS_ID
        batches = [src]
    else:
        batches = []
        sents = protocol.sentences
        for i in range(0, len(sents), protocol.batch):
            chunk = sents[i : i + protocol.batch]
            width = max(len(s) for s in chunk)
            src = torch.full((len(chunk), width), PAD_ID, dtype=torch.long)
            for j, s in enumerate(chunk):
                src[j, : len(s)] = torch.tensor(s, dtype=torch.long)
            batches.append(src)
    out = []
    for src in batches:
        rows = src.shape[0] * protocol.beam
        prev = torch.randint(_FIRST_WORD_ID, protocol.vocab_size, (rows, protocol.tgt_len), generator=gen)
        prev[:, 0] = BOS_ID
        out.append((src, prev))
    return out


def _translate(model: SubnetModel, src: torch.Tensor, prev: torch.Tensor, beam: int) -> None:
    """encode → expand to beam rows → tgt_len incremental decoder steps."""
    import torch

    enc = model.encode(src)
    order = torch.arange(src.shape[0], device=src.device).repeat_interleave(beam)
    enc = enc.index_select(order)
    cache = model.new_cache()
    for t in range(prev.shape[1]):
        model.decode(prev[:, t : t + 1], enc, cache=cache)


def _time_one(model: SubnetModel, src: torch.Tensor, prev: torch.Tensor, beam: int, cuda: bool,
              clock: str = "wall") -> tuple[float, float, float]:
    """(encoder ms, decoder ms, device ms) of one sample; wall clock via perf_counter (or
    the thread's CPU time on CPU, see `LatencyProtocol.clock`)."""
    import torch

    if not cuda:
        now = time.thread_time if clock == "thread_cpu" else time.perf_counter
        t0 = now()
        enc = model.encode(src)
        t1 = now()
        order = torch.arange(src.shape[0]).repeat_interleave(beam)
        enc = enc.index_select(order)
        cache = model.new_cache()
        for t in range(prev.shape[1]):
            model.decode(prev[:, t : t + 1], enc, cache=cache)
        t2 = now()
        return (t1 - t0) * 1e3, (t2 - t1) * 1e3, math.nan
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    start.record()
    enc = model.encode(src)
    torch.cuda.synchronize()
    t1 = time.perf_counter()
    order = torch.arange(src.shape[0], device=src.device).repeat_interleave(beam)
    enc = enc.index_select(order)
    cache = model.new_cache()
    for t in range(prev.shape[1]):
        model.decode(prev[:, t : t + 1], enc, cache=cache)
    end.record()
    torch.cuda.synchronize()
    t2 = time.perf_counter()
    return (t1 - t0) * 1e3, (t2 - t1) * 1e3, float(start.elapsed_time(end))


def _check_model(model: object, protocol: LatencyProtocol) -> None:
    import torch

    if not isinstance(model, SubnetModel):
        raise ValueError(f"measure_latency: the model lacks {missing_members(model, SubnetModel)} "
                         "(the seq2seq protocol, supernet.contracts.SubnetModel)")
    params = list(model.parameters())
    want_dev = torch.device(protocol.device)
    for p in params[:1]:
        if p.dtype != getattr(torch, protocol.dtype) or p.device.type != want_dev.type:
            raise ValueError(
                f"measure_latency: model is {p.dtype} on {p.device}, the protocol asks for "
                f"{protocol.dtype} on {protocol.device}; move the model first"
            )
    if model.vocab_size != protocol.vocab_size:
        raise ValueError(f"measure_latency: model vocab_size {model.vocab_size} != protocol "
                         f"vocab_size {protocol.vocab_size}")


def measure_latency(model: SubnetModel, protocol: LatencyProtocol | None = None, *,
                    subnet_key: str | None = None) -> LatencyResult:
    """Measures ``model`` (a `supernet.contracts.SubnetModel`, already on the protocol's
    device and dtype) under ``protocol``; returns raw samples, stats and the fingerprint.

    With real sentences, each timed run goes once over all input batches, so there are
    ``runs × ceil(n_sentences / batch)`` samples. With runtime "onnxruntime" ``model`` must
    be a static `supernet.Transformer`: it is exported to ONNX in a temporary directory and
    its graphs are measured in ONNX Runtime (``measure_s`` includes the export).
    """
    import torch

    p = protocol or LatencyProtocol()
    _check_model(model, p)
    cuda = p.device.startswith("cuda")
    began = time.perf_counter()
    with torch_threads(None if cuda else p.threads):
        fingerprint = protocol_fingerprint(p)
        inputs = [(s.to(p.device), v.to(p.device)) for s, v in make_inputs(p)]
        if p.runtime == "onnxruntime":
            with tempfile.TemporaryDirectory(prefix="automoe-latency-") as tmp:
                runner: SubnetModel = _ort_model(model, Path(tmp), torch.get_num_threads())
            enc_ms, dec_ms, dev_ms = _samples(runner, inputs, p, cuda)
        else:
            was_training = model.training
            model.eval()
            enc_ms, dec_ms, dev_ms = _samples(model, inputs, p, cuda)
            if was_training:
                model.train()
    return LatencyResult(
        encoder_ms=tuple(enc_ms),
        decoder_ms=tuple(dec_ms),
        device_ms=tuple(dev_ms),
        protocol=p.to_dict(),
        fingerprint=fingerprint,
        subnet_key=subnet_key,
        measure_s=time.perf_counter() - began,
    )


def _ort_model(model: SubnetModel, directory: Path, threads: int) -> Any:
    """``model`` exported into ``directory`` and loaded in ONNX Runtime (CPU, ``threads``
    intra-op threads, as torch runs); the sessions hold the graphs, so the directory may
    go once this returns."""
    from automoe.onnx_export import export_onnx
    from automoe.onnx_runtime import OrtTransformer
    from supernet.transformer import Transformer

    if not isinstance(model, Transformer):
        raise ValueError(f"measure_latency: runtime 'onnxruntime' exports a static "
                         f"supernet.Transformer, got {type(model).__name__}")
    out = export_onnx(model, directory / "onnx")
    return OrtTransformer(out, providers=["CPUExecutionProvider"], threads=threads)


def _samples(model: SubnetModel, inputs: list[tuple[torch.Tensor, torch.Tensor]],
             p: LatencyProtocol, cuda: bool) -> tuple[list[float], list[float], list[float]]:
    """Warm-up, then the timed samples: (encoder ms, decoder ms, device ms) lists."""
    import torch

    enc_ms: list[float] = []
    dec_ms: list[float] = []
    dev_ms: list[float] = []
    with torch.inference_mode():
        for i in range(p.warmup):
            src, prev = inputs[i % len(inputs)]
            _translate(model, src, prev, p.beam)
        for _ in range(p.runs):
            for src, prev in inputs:
                e, d, g = _time_one(model, src, prev, p.beam, cuda, p.clock)
                enc_ms.append(e)
                dec_ms.append(d)
                if cuda:
                    dev_ms.append(g)
    return enc_ms, dec_ms, dev_ms
