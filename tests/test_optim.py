"""Each optimizer plugin on cheap synthetic objectives: progress, seeding, checkpoint continuation, refusals."""

import numpy as np
import pytest

from evomerge.errors import ConfigError, EvomergeError
from evomerge.optim import OPTIMIZERS, make_optimizer
from evomerge.run.checkpoint import dumps, loads
from evomerge.spaces.base import SearchSpace
from evomerge.spaces.params import BoolParam, CategoricalParam, FloatParam, IntParam


class BoxSpace(SearchSpace):
    """A plain parameter list whose decode is the point itself (no merge needed)."""

    def __init__(self, params):
        self._p = params
        self.check_params()

    @classmethod
    def from_config(cls, cfg):
        return cls(cfg["params"])

    @property
    def params(self):
        return self._p

    def decode(self, point):
        return dict(point)


def sphere_space(d=6):
    return BoxSpace([FloatParam(name=f"x{i}", low=-2.0, high=2.0) for i in range(d)])


def mixed_space():
    return BoxSpace([
        CategoricalParam(name="kind", choices=["a", "b"]),
        FloatParam(name="x", low=0.0, high=1.0),
        FloatParam(name="y", low=1e-3, high=1.0, log=True, condition={"kind": ["b"]}),
        IntParam(name="k", low=1, high=5),
        BoolParam(name="flag"),
    ])


def sphere(p):
    return float(sum((v - 0.7) ** 2 for v in p.values()))


CASES = [
    ("cma", {}),
    ("nevergrad", {"name": "TwoPointsDE"}),
    ("nevergrad", {"name": "CMA"}),
    ("optuna", {"sampler": "tpe"}),
    ("optuna", {"sampler": "cmaes"}),
    ("optuna", {"sampler": "nsga2"}),
    ("random", {}),
]


def run_gens(opt, f, gens, pop=8):
    pts_all, best = [], []
    for _ in range(gens):
        pts = opt.ask(pop)
        vals = [f(p) for p in pts]
        opt.tell(pts, [[v] for v in vals])
        pts_all.append(pts)
        best.append(min(vals))
    return pts_all, best


def test_registry_lists_builtins():
    assert set(OPTIMIZERS.names()) >= {"cma", "nevergrad", "optuna", "random"}
    with pytest.raises(EvomergeError, match="unknown optimizer 'bogus'"):
        OPTIMIZERS.get("bogus")


@pytest.mark.parametrize("name, opts", CASES)
def test_optimizer_minimises_sphere(name, opts):
    space = sphere_space()
    opt = make_optimizer(name, space, ["minimize"], seed=3, population=8, budget=160, options=opts)
    pts, best = run_gens(opt, sphere, 20)
    for gen in pts:
        for p in gen:
            assert set(p) == set(space.names()) and all(-2.0 <= v <= 2.0 for v in p.values())
    # the optimum is 0; a uniform point in [-2, 2]^6 scores ~ 11 on average
    # measured over seeds 0-2: random ends at 2.1-2.8, every other optimizer below 0.6
    assert min(best) < (4.0 if name == "random" else 1.0), (name, opts, min(best))
    if name != "random":
        assert min(best[-5:]) < min(best[:3])


@pytest.mark.parametrize("name, opts", CASES)
def test_same_seed_same_points_and_state_round_trip_continues_stream(name, opts):
    def fresh():
        return make_optimizer(name, mixed_space(), ["maximize"], seed=11, population=6, options=opts)

    f = lambda p: p["x"] + (p.get("y", 0.0)) + p["k"] * 0.1 + (0.2 if p["flag"] else 0.0)  # noqa: E731
    a = fresh()
    b = fresh()
    pa, _ = run_gens(a, lambda p: -f(p), 3, pop=6)
    pb, _ = run_gens(b, lambda p: -f(p), 3, pop=6)
    assert pa == pb
    state = loads(dumps({"optimizer": a.state_dict()}))["optimizer"]  # through the checkpoint format
    np.random.seed(12345)  # disturbing the global numpy RNG must not change anything (pycma uses it)
    cont_a, _ = run_gens(a, lambda p: -f(p), 3, pop=6)
    c = make_optimizer(name, mixed_space(), ["maximize"], seed=999, population=6, options=opts)
    c.load_state_dict(state)
    np.random.seed(54321)
    cont_c, _ = run_gens(c, lambda p: -f(p), 3, pop=6)
    assert cont_a == cont_c
    for gen in cont_c:
        for p in gen:
            mixed_space().validate_point(p)
            assert ("y" in p) == (p["kind"] == "b")


def test_pending_points_survive_a_checkpoint():
    opt = make_optimizer("cma", sphere_space(3), ["minimize"], seed=0, population=4)
    pts = opt.ask(4)
    state = opt.state_dict()
    other = make_optimizer("cma", sphere_space(3), ["minimize"], seed=0, population=4)
    other.load_state_dict(state)
    other.tell(pts, [[sphere(p)] for p in pts])
    assert other.n_told == 4 and other.n_pending == 0


@pytest.mark.parametrize("name, opts", [("optuna", {"sampler": "nsga2"}), ("optuna", {"sampler": "tpe"}),
                                        ("nevergrad", {"name": "DE"}), ("random", {})])
def test_multi_objective_optimizers_accept_two_objectives(name, opts):
    opt = make_optimizer(name, sphere_space(2), ["minimize", "maximize"], seed=0, population=6, options=opts)
    for _ in range(3):
        pts = opt.ask(6)
        opt.tell(pts, [[p["x0"] ** 2, p["x1"]] for p in pts])
    assert opt.n_told == 18


@pytest.mark.parametrize("name, opts, msg", [
    ("cma", {}, "single-objective"),
    ("optuna", {"sampler": "cmaes"}, "single-objective"),
])
def test_single_objective_optimizers_refuse_two_objectives(name, opts, msg):
    with pytest.raises(ConfigError, match=msg):
        make_optimizer(name, sphere_space(2), ["minimize", "maximize"], options=opts)


@pytest.mark.parametrize("ng_name", ["Cobyla", "SQP"])
def test_nevergrad_refuses_unpicklable_scipy_optimizers(ng_name):
    with pytest.raises(ConfigError, match="cannot be checkpointed"):
        make_optimizer("nevergrad", sphere_space(4), ["minimize"], population=1, budget=20, options={"name": ng_name})


def test_nevergrad_ngopt_refused_when_it_picks_scipy():
    # NGOpt with one worker picks a scipy optimizer on a smooth low-budget problem
    with pytest.raises(ConfigError, match="NGOpt.*cannot be checkpointed"):
        make_optimizer("nevergrad", sphere_space(4), ["minimize"], population=1, budget=30, options={"name": "NGOpt"})


def test_bad_options_and_unknown_names_are_one_line():
    for name, opts, msg in [("nevergrad", {"name": "NoSuchOpt"}, "unknown nevergrad optimizer"),
                            ("cma", {"sigma0": -1}, "sigma0"),
                            ("optuna", {"sampler": "grid"}, "sampler"),
                            ("random", {"foo": 1}, "foo")]:
        with pytest.raises(ConfigError, match=msg) as ei:
            make_optimizer(name, sphere_space(2), ["minimize"], options=opts)
        assert "\n" not in str(ei.value)


def test_tell_checks_points_and_values():
    opt = make_optimizer("random", sphere_space(2), ["minimize"], seed=0)
    pts = opt.ask(2)
    with pytest.raises(EvomergeError, match="not asked"):
        opt.tell([{"x0": 9.0, "x1": 9.0}], [[1.0]])
    with pytest.raises(EvomergeError, match="non-finite"):
        opt.tell(pts[:1], [[float("nan")]])


WARM = [{"kind": "b", "x": 0.0, "y": 1.0, "k": 5, "flag": True}, {"kind": "a", "x": 1.0, "k": 1, "flag": False},
        {"kind": "b", "x": 0.123456789, "y": 0.001, "k": 2, "flag": False}, {"kind": "a", "x": 0.3, "k": 3, "flag": True},
        {"kind": "a", "x": 0.7, "k": 4, "flag": False}]


@pytest.mark.parametrize("name, opts", CASES)
def test_enqueued_points_are_asked_first_exactly_and_survive_a_checkpoint(name, opts):
    def fresh(seed=1):
        return make_optimizer(name, mixed_space(), ["maximize"], seed=seed, population=4, budget=40, options=opts)

    f = lambda p: [p["x"] + p.get("y", 0.0) + 0.1 * p["k"]]  # noqa: E731
    opt = fresh()
    assert opt.supports_enqueue
    opt.enqueue(WARM, [f"w{i}" for i in range(5)])
    first = opt.ask(4)
    assert first == WARM[:4] and [opt.origin(p) for p in first] == ["w0", "w1", "w2", "w3"]
    opt.tell(first, [f(p) for p in first])
    assert opt.origin(first[0]) is None and opt.n_queued == 1
    state = loads(dumps({"optimizer": opt.state_dict()}))["optimizer"]  # through the checkpoint codec
    second = opt.ask(4)
    assert second[0] == WARM[4] and opt.origin(second[0]) == "w4" and opt.origin(second[1]) is None
    other = fresh(seed=99)
    other.load_state_dict(state)
    assert other.ask(4) == second  # the queue is part of the checkpoint
    opt.tell(second, [f(p) for p in second])
    run_gens(opt, lambda p: -f(p)[0], 3, pop=4)  # and the optimizer goes on as usual


def test_enqueue_checks_points_against_the_space():
    opt = make_optimizer("random", mixed_space(), ["maximize"])
    with pytest.raises(ConfigError, match="outside its domain"):
        opt.enqueue([{"kind": "a", "x": 2.0, "k": 1, "flag": True}])
    with pytest.raises(ConfigError, match="inactive"):
        opt.enqueue([{"kind": "a", "x": 0.5, "y": 0.1, "k": 1, "flag": True}])


@pytest.mark.parametrize("last", [1, 2, 3, 5])
def test_cma_takes_a_partial_last_generation(last):
    """A budget that is not a multiple of the population ends with a small generation: pycma refuses asks and
    tells of fewer than mu points, so those are drawn from a whole population and not told to pycma."""
    opt = make_optimizer("cma", sphere_space(), ["minimize"], seed=0, population=8)
    run_gens(opt, sphere, 2)
    pts = opt.ask(last)
    assert len(pts) == last and len({tuple(p.values()) for p in pts}) == last
    opt.tell(pts, [[sphere(p)] for p in pts])
    state = loads(dumps({"optimizer": opt.state_dict()}))["optimizer"]
    again = make_optimizer("cma", sphere_space(), ["minimize"], seed=5, population=8)
    again.load_state_dict(state)
    assert again.ask(8) == opt.ask(8)  # and the run goes on (resume with a larger budget) deterministically
