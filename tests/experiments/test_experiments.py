"""Every experiment's --quick run, once per module, asserting the direction of its effect.

The quick runs use one CPU thread (restored afterwards): on a shared 2-core machine that is faster than
two contending threads.
"""

import json

import pytest
import torch

from tests.tolerance import EPS
from trainlab.errors import ConfigError
from trainlab.experiments import EXPERIMENTS, run_experiment
from trainlab.experiments.common import check, verdict
from trainlab.nn.activations import ACTIVATIONS

NAMES = [
    "init",
    "activations",
    "dead_relu",
    "zero_centering",
    "preprocessing",
    "batchnorm",
    "regularization",
    "dropout_inference",
    "approximation",
    "augmentation",
    "backprop",
    "transfer",
    "ensembles",
]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """Runs each experiment once (on first use) and returns its results.json as a dict."""
    cache = {}

    def get(name: str) -> dict:
        if name not in cache:
            out = tmp_path_factory.mktemp(name)
            returned = run_experiment(name, quick=True, out=out, device="cpu")
            result = json.loads((out / "results.json").read_text())
            cache[name] = {**result, "returned": returned, "dir": out}
        return cache[name]

    return get


def test_registry_lists_every_experiment_with_its_claim():
    assert sorted(NAMES) == EXPERIMENTS.list()
    for name in NAMES:
        assert len(EXPERIMENTS.meta(name)["claim"]) > 40
    with pytest.raises(ConfigError, match="did you mean 'batchnorm'"):
        EXPERIMENTS.get("batchnrom")


def test_verdict_is_computed_from_the_checks():
    yes, no = check("a", 1.0, "> 0", True), check("b", -1.0, "> 0", False)
    assert verdict([yes, yes]) == "supported"
    assert verdict([no, no]) == "not supported"
    assert verdict([yes, no]) == "mixed"


def same_worker(name: str):
    """Every test of one experiment on one pytest-xdist worker (`--dist loadgroup`): its quick run is
    cached per worker, so tests of one experiment spread over two workers would run it twice."""
    return pytest.mark.xdist_group(name)


# The two longest quick runs (about a minute each on 2 cores) run with -m slow: their outcome logic is
# tested through the real pipeline in tests/ensemble/test_experiment.py and tests/transfer/, and CI's
# whole suite must stay under 10 minutes.
LONG = {"ensembles", "transfer"}


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=[same_worker(n)] + [pytest.mark.slow] * (n in LONG)) for n in NAMES],
)
def test_quick_run_writes_results_readme_and_figures(quick, name):
    r = quick(name)
    assert r["verdict"] in ("supported", "not supported", "mixed")
    assert r["verdict"] == verdict(
        [check(c["name"], c["value"], c["rule"], c["passed"]) for c in r["checks"]]
    )
    assert r["returned"]["verdict"] == r["verdict"] and r["returned"]["out"] == str(r["dir"])
    assert r["claim"] == EXPERIMENTS.meta(name)["claim"] and r["config"]["quick"] is True
    readme = (r["dir"] / "README.md").read_text()
    assert r["claim"] in readme and f"**Verdict: {r['verdict']}**" in readme
    assert r["figures"]
    for figure in r["figures"]:
        assert (r["dir"] / figure).read_bytes()[:4] == b"\x89PNG"
        assert f"]({figure})" in readme


@same_worker("init")
def test_init_collapse_saturation_and_stability(quick):
    m = quick("init")["measured"]
    std = m["per_layer_std"]
    assert std["tanh, 0.01 randn"][5] < 0.1 * std["tanh, 0.01 randn"][0]
    assert std["ReLU, Xavier"][5] < 0.25 * std["ReLU, Xavier"][0]
    assert abs(std["ReLU, He"][5] / std["ReLU, He"][0] - 1) <= 0.2
    assert (
        m["layer6_mean_local_gradient"]["tanh, 0.05 randn"]
        < 0.5 * m["layer6_mean_local_gradient"]["tanh, Xavier"]
    )
    assert m["symmetry"]["constant 0.01"]["distinct_units"] == 1
    assert m["symmetry"]["random (PyTorch default)"]["distinct_units"] == 32


@same_worker("activations")
def test_activations_relu_beats_sigmoid_and_sigmoid_gradient_vanishes(quick):
    m = quick("activations")["measured"]
    acc = m["final_val_accuracy"]
    assert set(acc) == set(ACTIVATIONS.list())
    assert acc["relu"]["mean"] > acc["sigmoid"]["mean"] + 0.1
    assert m["max_sigmoid_derivative"] == pytest.approx(0.25, abs=1e-6)
    flow = m["gradient_norm_per_layer_10_layer_mlp"]
    assert flow["sigmoid"][0] < 0.01 * flow["sigmoid"][-1]
    assert flow["sigmoid"][0] / flow["sigmoid"][-1] < 0.01 * flow["relu"][0] / flow["relu"][-1]


@same_worker("dead_relu")
def test_dead_relu_more_units_die_at_high_learning_rate(quick):
    dead = quick("dead_relu")["measured"]["dead_share_by_lr"]["ReLU"]
    assert dead["1.0"] > dead["0.03"] + 0.02


@same_worker("zero_centering")
def test_zero_centering_same_sign_gradients_and_slower_path(quick):
    m = quick("zero_centering")["measured"]
    assert m["same_sign_share"]["positive"] == 1.0 and m["same_sign_share"]["centred"] < 0.75
    assert m["toy_steps_to_w_star_positive"][0] > m["toy_steps_to_w_star_centred"][0]
    curvature = m["fashion_top_hessian_eigenvalue"]
    assert curvature["scale01"] > curvature["channel_mean"]


@same_worker("preprocessing")
def test_preprocessing_centred_inputs_beat_raw_pixels(quick):
    acc = quick("preprocessing")["measured"]["final_val_accuracy"]
    assert acc["channel_mean_std"] > acc["none"] + 0.1
    assert set(acc) == {"none", "mean_image", "channel_mean", "channel_mean_std", "pca_whiten", "zca_whiten"}


@same_worker("batchnorm")
def test_batchnorm_rescues_bad_init_and_folds_exactly(quick):
    m = quick("batchnorm")["measured"]
    assert m["bad_init_val_accuracy"]["batch"] > m["bad_init_val_accuracy"]["none"] + 0.1
    assert m["final_val_accuracy_lr_0.03"]["batch"] > m["final_val_accuracy_lr_0.03"]["none"]
    assert m["fold"]["max_abs_difference"] < 1e-3
    assert set(m["norm_by_batch_size_val_accuracy"]) == {"batch", "layer", "instance", "group"}


@same_worker("regularization")
def test_regularization_overfits_without_and_l1_sparsifies(quick):
    m = quick("regularization")["measured"]
    gap = m["train_minus_val_accuracy_at_end"]
    assert gap["none"] > 0.03
    assert gap["dropout 0.5"] < gap["none"]
    assert m["first_layer_sparsity"]["L1 (2e-4)"] > m["first_layer_sparsity"]["none"]


@same_worker("dropout_inference")
def test_dropout_mc_average_converges_to_the_rescaled_pass(quick):
    m = quick("dropout_inference")["measured"]
    for name, errors in m["relative_error_of_mc_mean_by_masks"].items():
        assert errors["256"] < errors["1"] / 4, name  # 1 / sqrt(256) = 1 / 16, with slack
        assert m["relative_error_without_rescaling"][name] > 0.3
        accs = list(m["val_accuracy"][name].values())
        assert abs(accs[0] - accs[1]) < 0.02


@same_worker("approximation")
def test_approximation_relu_sum_exact_and_linear_net_fails_on_rings(quick):
    from trainlab.experiments.approximation import NEURONS

    m = quick("approximation")["measured"]
    # the network and the formula each round w x + b (2 ops) and the signed sum of the six ReLUs (6 ops),
    # relative to the magnitudes of the terms: at most sum |w| * 3 + |b| on the grid x in [-0.5, 3]
    terms = sum(abs(w) * 3 + abs(b) for w, b in NEURONS)
    assert m["six_relu_max_abs_difference"] <= 8 * EPS * terms
    assert m["rings_accuracy"]["linear activation"] < 0.75 < 0.9 < m["rings_accuracy"]["relu"]
    shallow = m["mse_one_hidden_layer"]
    assert shallow["128"] < shallow["1"]


@same_worker("augmentation")
def test_augmentation_measures_every_quick_augmentation(quick):
    acc = quick("augmentation")["measured"]["test_accuracy"]
    assert set(acc) == {"none", "translate=2", "mixup=0.2"}
    assert all(0.5 < a["mean"] <= 1 for a in acc.values())
