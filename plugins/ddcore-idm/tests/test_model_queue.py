"""The model queue: FIFO, push schedule, training schedule, running accuracy, state_dict resume."""

from __future__ import annotations

import torch
from ddcore.hotpath import HotPath, is_compiled

from ddcore_idm.queue import ModelQueue, ModelQueueConfig


def _queue(build, **kw):
    defaults = dict(net_num=4, initial_nets=3, net_generate_interval=3, train_net_num=1, fetch_net_num=2,
                    model_train_steps=2, trained_bs=8, eval_interval=5)
    defaults.update(kw)
    return ModelQueue(ModelQueueConfig(**defaults), build)


class _Ctx:
    def __init__(self, step):
        self.step = step


def test_fifo_and_push_schedule(stub_build_nets):
    q = _queue(stub_build_nets(3), model_train_steps=0)
    assert q.serials == [0, 1, 2]
    history = {}
    for step in range(10):
        q.nets(step)
        history[step] = q.serials
        q.after_step(_Ctx(step))
    assert history[0] == [0, 1, 2, 3]  # a net is pushed at step 0 too
    assert history[1] == history[2] == [0, 1, 2, 3]
    assert history[3] == [1, 2, 3, 4]  # full (net_num 4): the oldest leaves first
    assert history[6] == [2, 3, 4, 5]
    assert history[9] == [3, 4, 5, 6]


def test_sampled_nets_are_frozen_queue_members_and_deterministic(stub_build_nets):
    a, b = _queue(stub_build_nets(3), train_net_num=2), _queue(stub_build_nets(3), train_net_num=2)
    for step in range(4):
        nets_a, nets_b = a.nets(step), b.nets(step)
        assert a.info()["net_serials"] == b.info()["net_serials"]
        assert len(set(a.info()["net_serials"])) == 2
        assert all(any(n is m.net for m in a.queue) for n in nets_a)
        assert all(not p.requires_grad for n in nets_a for p in n.parameters())
        a.after_step(_Ctx(step))
        b.after_step(_Ctx(step))


def test_training_schedule_and_running_accuracy(stub_build_nets):
    build = stub_build_nets(3)
    q = _queue(build, fetch_net_num=2, model_train_steps=3, trained_bs=8, eval_interval=5)
    q.nets(0)
    before = {m.serial: [p.clone() for p in m.net.parameters()] for m in q.queue}
    assert all(acc == 0 for acc in q.info()["net_accuracy"])  # untrained: weight 0
    q.after_step(_Ctx(0))
    assert build.train.calls == [8] * 6  # 2 nets x 3 steps of trained_bs real images
    trained = [m for m in q.queue if m.serial in before
               and any(not torch.equal(p, p0) for p, p0 in zip(m.net.parameters(), before[m.serial]))]
    assert len(trained) == 2
    assert all(m.seen == 24 for m in trained)
    others = [m for m in q.queue if m not in trained]
    assert all(m.seen == 0 for m in others)
    accs = [m.accuracy_percent() for m in trained]
    assert all(0 <= a <= 100 for a in accs)
    for step in range(1, 5):
        q.nets(step)
        q.after_step(_Ctx(step))
    assert sum(float(m.seen) for m in q.queue) == 5 * 2 * 3 * 8
    q.nets(5)  # eval_interval: meters reset
    assert all(m.seen == 0 for m in q.queue)


def test_state_dict_resume_reproduces_the_run(stub_build_nets):
    def run(q, steps):
        out = []
        for step in steps:
            nets = q.nets(step)
            x = torch.ones(1, 3, 8, 8)
            out.append([n(x) for n in nets] + q.info()["net_accuracy"])
            q.after_step(_Ctx(step))
        return out

    full = _queue(stub_build_nets(3))
    ref = run(full, range(8))
    first = _queue(stub_build_nets(3))
    run(first, range(4))
    state = first.state_dict()
    resumed = _queue(stub_build_nets(3))
    resumed.load_state_dict(state)
    assert resumed.serials == first.serials
    tail = run(resumed, range(4, 8))
    for a, b in zip(ref[4:], tail):
        for x, y in zip(a, b):
            torch.testing.assert_close(x, y)


def test_queue_training_runs_on_the_run_hot_path(stub_build_nets):
    """The fetched nets' SGD steps are part of the distillation step: they get the run's channels_last/compile."""
    build = stub_build_nets(3)
    build.hot_path = HotPath(channels_last=True, compile=True)
    hot, eager = _queue(build), _queue(stub_build_nets(3))
    for q in (hot, eager):
        q.nets(0)
        q.after_step(_Ctx(0))
    trained = [m for m in hot.queue if m.seen > 0]
    assert len(trained) == 2
    for m in hot.queue:
        conv = m.net.features[0].weight
        assert is_compiled(m.net) == (m in trained)
        assert conv.is_contiguous(memory_format=torch.channels_last) == (m in trained)
    for m_hot, m_eager in zip(hot.queue, eager.queue):
        assert int(m_hot.seen) == int(m_eager.seen)
        for p_hot, p_eager in zip(m_hot.net.parameters(), m_eager.net.parameters()):
            torch.testing.assert_close(p_hot, p_eager, rtol=1e-4, atol=1e-5)
