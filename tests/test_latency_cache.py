"""Latency statistics and the fingerprinted cache (no model needed)."""

from __future__ import annotations

import json
import statistics

import numpy as np
import pytest

from automoe.costs.latency import (
    LatencyProtocol,
    LatencyResult,
    device_fingerprint,
    fingerprint_id,
    summarize,
    trimmed_mean,
)
from automoe.costs.latency_cache import LatencyCache


def _naive_trimmed(xs, frac=0.1):
    xs = sorted(xs)
    k = int(len(xs) * frac)
    while len(xs) - 2 * k < 1:
        k -= 1
    kept = xs[k : len(xs) - k]
    return sum(kept) / len(kept)


@pytest.mark.parametrize("n", [1, 2, 3, 9, 10, 11, 19, 20, 21, 100])
def test_trimmed_mean_never_empty_and_matches_naive(n):
    rng = np.random.default_rng(n)
    xs = rng.lognormal(size=n).tolist()
    assert trimmed_mean(xs) == pytest.approx(_naive_trimmed(xs))
    if n == 20:  # HAT's rule drops 2 at each end
        assert trimmed_mean(xs) == pytest.approx(statistics.mean(sorted(xs)[2:18]))


def test_summarize_values():
    s = summarize([1.0, 2.0, 3.0, 4.0, 100.0])
    assert s["median"] == 3.0
    assert s["trimmed_mean"] == pytest.approx(22.0)  # 5 samples: nothing dropped
    assert s["std"] == pytest.approx(np.std([1, 2, 3, 4, 100]))
    assert s["cv"] == pytest.approx(s["std"] / s["mean"])
    assert s["n"] == 5
    with pytest.raises(ValueError):
        summarize([])


def test_protocol_validation_and_key():
    a = LatencyProtocol()
    assert a.key() == LatencyProtocol().key()
    assert a.key() != LatencyProtocol(beam=4).key()
    assert LatencyProtocol(sentences=((5, 6, 3),)).key() != LatencyProtocol(sentences=((5, 7, 3),)).key()
    assert "sentences" not in LatencyProtocol(sentences=((5, 3),)).to_dict()
    with pytest.raises(ValueError, match="'runs'"):
        LatencyProtocol(runs=0)
    with pytest.raises(ValueError, match="'dtype'"):
        LatencyProtocol(dtype="float64")
    with pytest.raises(ValueError, match="token id 9000"):
        LatencyProtocol(sentences=((9000, 3),))


def _result(fp, key="abc", ms=1.0, protocol=None):
    protocol = protocol or LatencyProtocol(runs=3)
    return LatencyResult(
        encoder_ms=(ms, ms, ms), decoder_ms=(2 * ms,) * 3, device_ms=(),
        protocol=protocol.to_dict(), fingerprint=fp, subnet_key=key,
    )


def test_result_roundtrip_and_hat_statistic():
    r = _result(device_fingerprint(), ms=1.5)
    assert r.total_ms == (4.5, 4.5, 4.5) and r.latency_ms == 4.5 and r.hat_ms == pytest.approx(4.5)
    back = LatencyResult.from_dict(json.loads(json.dumps(r.to_dict())))
    assert back == r


def test_fingerprint_has_the_comparability_fields():
    fp = device_fingerprint(threads=1)
    for key in ("device_name", "torch", "threads", "dtype", "device_type"):
        assert key in fp
    assert fp["threads"] == 1
    assert fingerprint_id(fp) != fingerprint_id(device_fingerprint(threads=2))
    assert fingerprint_id(fp) != fingerprint_id(device_fingerprint(threads=1, dtype="bfloat16"))


def test_cache_never_returns_another_fingerprint(tmp_path):
    protocol = LatencyProtocol(runs=3, threads=1)
    here = device_fingerprint(protocol.device, protocol.dtype, protocol.threads)
    other = dict(here, device_name="Some Other CPU")
    newer_torch = dict(here, torch="99.0")
    path = tmp_path / "lat.jsonl"
    cache = LatencyCache(path)
    cache.put(_result(other, ms=7.0, protocol=protocol))
    cache.put(_result(newer_torch, ms=8.0, protocol=protocol))
    assert cache.get("abc", protocol) is None  # this machine never measured it
    assert cache.get("abc", protocol, fingerprint=other).latency_ms == 21.0
    cache.put(_result(here, ms=1.0, protocol=protocol))
    reloaded = LatencyCache(path)
    assert len(reloaded) == 3
    assert reloaded.get("abc", protocol).latency_ms == 3.0
    assert reloaded.get("abc", LatencyProtocol(runs=3, threads=2)) is None  # other protocol
    assert reloaded.get("abd", protocol) is None  # other subnet


def test_cache_does_not_trust_a_stored_fingerprint_id(tmp_path):
    """A record whose fingerprint says 'other CPU' but carries this machine's id is filed
    under the other CPU: ids are recomputed from content."""
    protocol = LatencyProtocol(runs=3)
    here = device_fingerprint(protocol.device, protocol.dtype, protocol.threads)
    rec = _result(dict(here, device_name="Other"), protocol=protocol).to_dict()
    rec["fingerprint_id"] = fingerprint_id(here)
    path = tmp_path / "lat.jsonl"
    path.write_text(json.dumps(rec) + "\n")
    assert LatencyCache(path).get("abc", protocol) is None


def test_cache_skips_a_broken_last_line_only(tmp_path):
    protocol = LatencyProtocol(runs=3)
    good = json.dumps(_result(device_fingerprint(), protocol=protocol).to_dict())
    path = tmp_path / "lat.jsonl"
    path.write_text(good + "\n" + good[: len(good) // 2])
    with pytest.warns(UserWarning, match="broken last line"):
        assert len(LatencyCache(path)) == 1
    path.write_text(good[:10] + "\n" + good + "\n")
    with pytest.raises(ValueError, match=r"lat.jsonl:1"):
        LatencyCache(path)


def test_cache_measure_builds_only_on_a_miss(tmp_path):
    protocol = LatencyProtocol(runs=3)
    cache = LatencyCache(tmp_path / "lat.jsonl")
    fp = device_fingerprint(protocol.device, protocol.dtype, protocol.threads)
    cache.put(_result(fp, key="k1", protocol=protocol))

    def fail():
        raise AssertionError("should not build a model on a cache hit")

    result, hit = cache.measure("k1", protocol, fail)
    assert hit and result.subnet_key == "k1"


def _writer(path: str, tag: str, n: int) -> None:
    from automoe.costs.latency import device_fingerprint

    cache = LatencyCache(path)
    fp = device_fingerprint("cpu", "float32", 1)
    # long lines (a 5,000-run protocol's samples): several pages each, so unlocked buffered
    # appends from two processes could interleave
    protocol = LatencyProtocol(runs=3)
    for i in range(n):
        cache.put(LatencyResult(encoder_ms=(1.0 + i,) * 3000, decoder_ms=(2.0,) * 3000,
                                device_ms=(), protocol=protocol.to_dict(), fingerprint=fp,
                                subnet_key=f"{tag}{i:04d}"))


def test_two_processes_appending_at_once_leave_a_consistent_cache(tmp_path):
    import multiprocessing as mp

    path = str(tmp_path / "cache.jsonl")
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, tag, 60)) for tag in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    lines = (tmp_path / "cache.jsonl").read_text().splitlines()
    assert len(lines) == 120 and all(line.endswith("}") for line in lines)
    cache = LatencyCache(path)  # every line parses: no interleaving, no broken record
    assert len(cache) == 120


def test_two_users_of_one_file_keep_the_first_record_of_a_key(tmp_path):
    """Two caches on one file (two searches): a record another appended after this one was
    loaded is seen by `measure` (no model built), and `put` of a key that is already in the
    file keeps the stored record and appends nothing."""
    protocol = LatencyProtocol(runs=3)
    fp = device_fingerprint(protocol.device, protocol.dtype, protocol.threads)
    path = tmp_path / "lat.jsonl"
    first, second = LatencyCache(path), LatencyCache(path)
    assert first.put(_result(fp, key="k1", ms=1.0, protocol=protocol)).latency_ms == 3.0

    def fail():
        raise AssertionError("k1 was measured by the other user: no model to build")

    result, hit = second.measure("k1", protocol, fail)
    assert hit and result.latency_ms == 3.0
    third = LatencyCache(tmp_path / "lat.jsonl")
    first.put(_result(fp, key="k2", ms=1.0, protocol=protocol))
    stored = third.put(_result(fp, key="k2", ms=5.0, protocol=protocol))  # measured at once
    assert stored.latency_ms == 3.0 and third.get("k2", protocol).latency_ms == 3.0
    lines = path.read_text().splitlines()
    assert [json.loads(line)["subnet_key"] for line in lines] == ["k1", "k2"]


def test_the_next_put_cuts_off_a_killed_writers_partial_line(tmp_path):
    protocol = LatencyProtocol(runs=3)
    fp = device_fingerprint(protocol.device, protocol.dtype, protocol.threads)
    path = tmp_path / "lat.jsonl"
    LatencyCache(path).put(_result(fp, key="k1", protocol=protocol))
    good = path.read_text()
    with open(path, "a") as f:  # what a writer killed mid-append leaves
        f.write(json.dumps(_result(fp, key="k2", protocol=protocol).to_dict())[:40])
    with pytest.warns(UserWarning, match="broken last line"):
        cache = LatencyCache(path)
    cache.put(_result(fp, key="k3", protocol=protocol))
    assert path.read_text().startswith(good)
    assert [json.loads(s)["subnet_key"] for s in path.read_text().splitlines()] == ["k1", "k3"]
    assert len(LatencyCache(path)) == 2  # loads without a warning or an error


def test_a_cache_that_is_not_utf8_names_the_file_and_line(tmp_path):
    good = json.dumps(_result(device_fingerprint(), protocol=LatencyProtocol(runs=3)).to_dict())
    path = tmp_path / "lat.jsonl"
    path.write_bytes(good.encode() + b"\n\xff\xfe binary\n")
    with pytest.raises(ValueError, match=r"lat.jsonl:2: not UTF-8 text"):
        LatencyCache(path)
