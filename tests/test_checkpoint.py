"""Checkpoint files: weights-only round trip, atomic replacement, clear errors, averaging."""

from __future__ import annotations

import pickle

import pytest
import torch
from train_fakes import FakeSpace, make_config

from supernet.training.checkpoint import (
    FORMAT,
    average_model_states,
    load_checkpoint,
    plain,
    save_checkpoint,
)


def _trained_state(seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    model = torch.nn.Linear(4, 3)
    with torch.no_grad():
        model.weight.copy_(torch.randn(3, 4, generator=gen))
        model.bias.copy_(torch.randn(3, generator=gen))
    opt = torch.optim.Adam(model.parameters(), betas=(0.9, 0.98))
    model(torch.randn(2, 4, generator=gen)).sum().backward()
    opt.step()
    return {"kind": "supernet", "space": plain(FakeSpace().largest()), "vocab_size": 24,
            "update": 3, "best_loss": float("inf"), "model": model.state_dict(),
            "optimizer": opt.state_dict(), "data": {"epoch": 1, "position": 2},
            "probes": {"largest": make_config(16, 2, 2, 16).to_dict()}}


def test_round_trip_loads_with_weights_only(tmp_path):
    state = _trained_state()
    path = save_checkpoint(tmp_path / "c.pt", state)
    loaded = load_checkpoint(path, expect={"kind": "supernet", "vocab_size": 24})
    assert loaded["format"] == FORMAT and loaded["update"] == 3
    for name, t in state["model"].items():
        assert torch.equal(loaded["model"][name], t)
    assert loaded["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.98)
    exp_avg = state["optimizer"]["state"][0]["exp_avg"]
    assert torch.equal(loaded["optimizer"]["state"][0]["exp_avg"], exp_avg)
    # the file really is weights-only loadable by torch itself
    torch.load(path, weights_only=True)


def test_interrupted_write_leaves_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint_last.pt"
    save_checkpoint(path, _trained_state(0))
    before = path.read_bytes()

    def dying_save(obj, fh, *args, **kwargs):
        fh.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt  # the process is stopped in the middle of the write

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, _trained_state(1))
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_last.pt"]
    assert load_checkpoint(path)["update"] == 3


def test_leftover_temp_file_of_a_killed_write_is_ignored(tmp_path):
    path = save_checkpoint(tmp_path / "checkpoint_last.pt", _trained_state(0))
    (tmp_path / ".checkpoint_last.pt.abc.tmp").write_bytes(b"garbage from a SIGKILL")
    assert load_checkpoint(path)["update"] == 3


def test_truncated_file_fails_clearly(tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", _trained_state())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"c\.pt: not a readable checkpoint"):
        load_checkpoint(path)


def test_foreign_files_fail_clearly(tmp_path):
    plain_state = tmp_path / "weights.pt"
    torch.save({"weight": torch.zeros(2)}, plain_state)
    with pytest.raises(ValueError, match="not an AutoMoE training checkpoint"):
        load_checkpoint(plain_state)
    code = tmp_path / "evil.pt"
    with open(code, "wb") as fh:
        pickle.dump({"format": FORMAT, "x": FakeSpace()}, fh, protocol=2)  # needs code
    with pytest.raises(ValueError, match=r"evil\.pt: not a readable checkpoint"):
        load_checkpoint(code)
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")


def test_checkpoint_of_another_space_or_vocab_is_refused(tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", _trained_state())
    other = plain(FakeSpace().smallest())
    with pytest.raises(ValueError, match=r"another space: .*space\.decoder_embed_dim: "
                                         r"checkpoint has 16, this run has 8"):
        load_checkpoint(path, expect={"space": other})
    with pytest.raises(ValueError, match="another vocab_size"):
        load_checkpoint(path, expect={"vocab_size": 32})
    with pytest.raises(ValueError, match="no 'subnet' entry"):
        load_checkpoint(path, expect={"subnet": {}})


def test_average_of_checkpoints_is_the_elementwise_mean(tmp_path):
    paths = [save_checkpoint(tmp_path / f"c{i}.pt", _trained_state(i)) for i in range(3)]
    avg = average_model_states(paths)
    states = [_trained_state(i)["model"] for i in range(3)]
    for name in avg:
        want = sum(s[name] for s in states) / 3
        torch.testing.assert_close(avg[name], want)
    bad = save_checkpoint(tmp_path / "bad.pt", {**_trained_state(0),
                                                 "model": {"other": torch.zeros(1)}})
    with pytest.raises(ValueError, match="other parameters"):
        average_model_states([paths[0], bad])
