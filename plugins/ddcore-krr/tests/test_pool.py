"""The model pool: random initial training, one step per outer update, counter reset after T steps, resume."""

from __future__ import annotations

import types

import torch

from ddcore_krr.pool import ModelPool, ModelPoolConfig

from ddcore_krr.testing import tiny_krr_build


def _visit(pool: ModelPool, step: int) -> int:
    pool.nets(step)
    pool.after_step(types.SimpleNamespace(syn=None))
    return pool.current


def test_initial_counters_are_random_steps_in_1_to_T(tmp_path):
    _, _, pool, _ = tiny_krr_build(tmp_path, pool=ModelPoolConfig(num_models=4, max_steps=5))
    pool.nets(0)
    assert len(pool.models) == 4
    assert all(1 <= c <= 5 for c in pool.counters)
    assert not pool.models[pool.current].training  # handed out in eval mode (BN running statistics)


def test_init_steps_max_bounds_the_initial_training_only(tmp_path):
    _, _, pool, _ = tiny_krr_build(tmp_path, pool=ModelPoolConfig(num_models=6, max_steps=50, init_steps_max=2))
    pool.nets(0)
    assert all(1 <= c <= 2 for c in pool.counters)
    before = sum(pool.counters)
    for step in range(3):  # T is still 50: the visited model trains, nothing is re-initialised
        _visit(pool, step)
    assert pool.resets == 0 and sum(pool.counters) == before + 3


def test_counter_resets_after_T_steps_and_model_is_reinitialised(tmp_path):
    _, _, pool, _ = tiny_krr_build(tmp_path, pool=ModelPoolConfig(num_models=1, max_steps=3))
    pool.nets(0)
    start = pool.counters[0]
    history = []
    for step in range(8):
        before = {k: v.clone() for k, v in pool.models[0].state_dict().items()}
        _visit(pool, step)
        history.append(pool.counters[0])
        after = pool.models[0].state_dict()
        assert any(not torch.equal(before[k], after[k]) for k in before)  # trained or re-initialised
    # from t0 the counter climbs to T, then the model is re-initialised with t = 0, then climbs again
    expected, t = [], start
    for _ in range(8):
        t = t + 1 if t < 3 else 0
        expected.append(t)
    assert history == expected
    assert 0 in history and pool.resets == history.count(0)


def test_never_reset_quirk_keeps_counter_and_reinitialises_every_visit(tmp_path):
    _, _, pool, _ = tiny_krr_build(tmp_path, pool=ModelPoolConfig(num_models=1, max_steps=2, never_reset=True))
    pool.nets(0)
    counters = [pool.counters[0]]
    for step in range(5):
        _visit(pool, step)
        counters.append(pool.counters[0])
    assert counters[-1] == 2 and min(counters[2:]) == 2  # stuck at T
    assert pool.resets == 5 - (2 - counters[0])  # every visit after reaching T re-initialises


def test_state_dict_round_trip_continues_identically(tmp_path):
    cfg = ModelPoolConfig(num_models=2, max_steps=3)
    _, _, pool_a, _ = tiny_krr_build(tmp_path / "a", pool=cfg)
    for step in range(3):
        _visit(pool_a, step)
    state = pool_a.state_dict()
    _, _, pool_b, _ = tiny_krr_build(tmp_path / "b", pool=cfg)
    pool_b.load_state_dict(state)
    for step in range(3, 7):
        assert _visit(pool_a, step) == _visit(pool_b, step)
    assert pool_a.counters == pool_b.counters and pool_a.generations == pool_b.generations
    for ma, mb in zip(pool_a.models, pool_b.models):
        for (ka, va), (kb, vb) in zip(ma.state_dict().items(), mb.state_dict().items()):
            torch.testing.assert_close(va, vb, msg=ka)


def test_code_init_range_excludes_T(tmp_path):
    """init_steps_range = "code" draws like np.random.randint(1, T): never T itself (T = 2 -> always 1)."""
    draws = {}
    for mode in ("paper", "code"):
        _, _, pool, _ = tiny_krr_build(tmp_path / mode, pool=ModelPoolConfig(num_models=8, max_steps=2,
                                                                             init_steps_range=mode))
        pool.nets(0)
        draws[mode] = set(pool.counters)
    assert draws["code"] == {1}
    assert draws["paper"] == {1, 2}  # 8 draws of U{1, 2} with these seeds reach both values
