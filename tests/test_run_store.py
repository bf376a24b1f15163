"""Ledger, checkpoints and Pareto/hypervolume on known inputs."""

import itertools
import os

import numpy as np
import pytest

from evomerge.errors import EvomergeError
from evomerge.run.checkpoint import load_latest_checkpoint, save_checkpoint
from evomerge.run.ledger import Ledger
from evomerge.run.pareto import dominates, hypervolume, pareto_front


def test_ledger_appends_and_drops_a_torn_tail(tmp_path):
    path = tmp_path / "ledger.jsonl"
    led = Ledger(path)
    for i in range(3):
        led.append({"i": i, "v": [0.5, i]})
    with open(path, "ab") as fh:
        fh.write(b'{"i": 3, "v": [0.')  # killed mid-write
    again = Ledger(path)
    assert [r["i"] for r in again] == [0, 1, 2]
    assert path.read_bytes().endswith(b"\n")
    again.append({"i": 3})
    assert [r["i"] for r in Ledger(path)] == [0, 1, 2, 3]


def test_ledger_refuses_corruption_in_the_middle(tmp_path):
    path = tmp_path / "ledger.jsonl"
    path.write_text('{"i": 0}\nnot json\n{"i": 2}\n')
    with pytest.raises(EvomergeError, match="line 2 is corrupt"):
        Ledger(path)


def test_ledger_refuses_nan(tmp_path):
    with pytest.raises(ValueError):
        Ledger(tmp_path / "l.jsonl").append({"v": float("nan")})


def test_checkpoint_keeps_two_and_falls_back_when_latest_is_corrupt(tmp_path):
    folder = tmp_path / "checkpoints"
    for step in range(1, 5):
        save_checkpoint(folder, step, {"step": step, "blob": os.urandom(64)})
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["ckpt-000003.npz", "ckpt-000003.sha256", "ckpt-000004.npz", "ckpt-000004.sha256"]
    assert load_latest_checkpoint(folder)[0] == 4
    latest = folder / "ckpt-000004.npz"
    data = bytearray(latest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    latest.write_bytes(bytes(data))
    step, state = load_latest_checkpoint(folder)
    assert step == 3 and state["step"] == 3 and len(state["blob"]) == 64
    (folder / "ckpt-000003.npz").write_bytes(b"truncated")
    with pytest.raises(EvomergeError, match="every checkpoint"):
        load_latest_checkpoint(folder)


def test_checkpoint_data_round_trip(tmp_path):
    """JSON types, tuples, non-string keys, numpy arrays / scalars, bytes and 128-bit ints come back as written."""
    import numpy as np

    state = {"i": 2**100 + 3, "f": 0.1, "nan": float("nan"), "t": (1, (2.5, "x")), "keys": {3: "a", (1, 2): [None]},
             "arr": np.arange(6, dtype=np.uint32).reshape(2, 3), "np": np.float32(1.5), "b": b"\x80\x04raw",
             "tagged": {"__tuple__": 1}}
    save_checkpoint(tmp_path, 1, state)
    back = load_latest_checkpoint(tmp_path)[1]
    assert back["i"] == state["i"] and back["f"] == 0.1 and back["nan"] != back["nan"]
    assert back["t"] == (1, (2.5, "x")) and back["keys"] == {3: "a", (1, 2): [None]} and back["b"] == state["b"]
    assert back["arr"].dtype == np.uint32 and (back["arr"] == state["arr"]).all() and back["np"] == 1.5
    assert back["tagged"] == {"__tuple__": 1}
    with pytest.raises(EvomergeError, match="not plain data"):
        save_checkpoint(tmp_path, 2, {"x": object()})


def test_checkpoint_missing_is_none(tmp_path):
    assert load_latest_checkpoint(tmp_path / "nothing") is None


def test_pareto_front_known_set():
    vals = [[1, 5], [2, 4], [3, 3], [2, 2], [4, 1], [4, 1], [0, 0]]
    # maximise both: [1,5] [2,4] [3,3] [4,1] x2 are non-dominated; [2,2] < [3,3]; [0,0] dominated
    assert pareto_front(vals, ["maximize", "maximize"]) == [0, 1, 2, 4, 5]
    assert pareto_front(vals, ["minimize", "minimize"]) == [6]
    # max x / min y: (4,1) twice has the largest x; (0,0) has the smallest y; everything else is beaten by (4,1)
    assert pareto_front(vals, ["maximize", "minimize"]) == [4, 5, 6]
    assert dominates([0, 0], [0, 1]) and not dominates([0, 1], [0, 1])


def test_hypervolume_known_values():
    # 2-D maximisation, ref (0, 0): staircase of (1,3), (2,2), (3,1) covers 3 + 2 + 1 = 6
    assert hypervolume([[1, 3], [2, 2], [3, 1]], ["maximize"] * 2, [0, 0]) == pytest.approx(6.0)
    # dominated and outside-the-reference points add nothing
    assert hypervolume([[1, 3], [2, 2], [3, 1], [1, 1], [-1, 5]], ["maximize"] * 2, [0, 0]) == pytest.approx(6.0)
    # minimisation, single point: box to the reference
    assert hypervolume([[1, 2]], ["minimize"] * 2, [3, 3]) == pytest.approx(2.0)
    # 3-D: unit cube corners (1,0,0),(0,1,0),(0,0,1) minimised w.r.t. ref (2,2,2): inclusion-exclusion gives
    # 3*4 - 3*2 + 1 = 7
    pts = [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
    assert hypervolume(pts, ["minimize"] * 3, [2, 2, 2]) == pytest.approx(7.0)
    assert hypervolume([[0.7]], ["maximize"], [0.2]) == pytest.approx(0.5)
    assert hypervolume([], ["maximize"], [0.0]) == 0.0


def test_hypervolume_matches_monte_carlo_in_4d():
    rng = np.random.default_rng(0)
    pts = rng.random((12, 4))
    ref = np.ones(4)
    exact = hypervolume(pts, ["minimize"] * 4, ref)
    samples = rng.random((200_000, 4))
    dominated = np.zeros(len(samples), bool)
    for p in pts:
        dominated |= np.all(samples >= p, axis=1)
    assert exact == pytest.approx(dominated.mean(), abs=0.01)
    # a permutation of the points changes nothing
    perm = list(itertools.permutations(range(4)))[5]
    assert hypervolume(pts[:, perm], ["minimize"] * 4, ref) == pytest.approx(exact)
