import re
import tomllib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyro_vae import DEFAULTS, ConfigError, load_config, validate
from pyro_vae.config.load import apply_overrides, dump_toml, parse_value


def test_defaults_are_valid():
    cfg = load_config()
    assert cfg == validate({})
    assert cfg["model"]["latent_dim"] == 50 and cfg["data"]["batch_size"] == 128


@pytest.mark.parametrize(
    "cfg, pattern",
    [
        ({"trian": {}}, "unknown section or key 'trian'; valid: seed, device, plugins, data, model, train, eval"),
        ({"train": {"epoch": 3}}, "unknown key 'train.epoch'; valid: elbo, epochs"),
        ({"train": {"epochs": "ten"}}, "train.epochs must be an integer, got 'ten'"),
        ({"train": {"epochs": 0}}, "train.epochs must be an integer >= 1"),
        ({"train": {"beta": -1.0}}, "train.beta must be a number >= 0"),
        ({"model": {"latent_dim": 0}}, "model.latent_dim must be an integer >= 1"),
        ({"model": {"latent_dim": True}}, "model.latent_dim must be an integer"),
        (
            {"model": {"prior": {"kind": "gausian"}}},
            "unknown kind 'gausian'.*valid kinds: flow, laplace, learned_normal, mixture, standard_normal, student_t, vamp",
        ),
        ({"model": {"likelihood": {"kind": "bernoulli", "scale": 2}}}, "valid parameters: allow_grey"),
        ({"model": {"encoder": {"hidden": [10]}}}, "needs a 'kind'"),
        (
            {"data": {"dataset": "cifar"}},
            "valid kinds: celeba, cifar10, fashion-mnist, image_folder, kmnist, mnist, npz, shapes, synthetic",
        ),
        ({"data": {"binarize": "yes"}}, "one of none, dynamic, static"),
        ({"device": "tpu"}, "device must be"),
        ({"data": 3}, "data is a section"),
    ],
)
def test_config_errors_list_the_valid_choices(cfg, pattern):
    with pytest.raises(ConfigError, match=pattern):
        validate(cfg)


def test_overrides_parse_toml_values():
    assert parse_value("3") == 3 and parse_value("1e-3") == 1e-3 and parse_value("true") is True
    assert parse_value("[256, 128]") == [256, 128] and parse_value("{kind='iwae'}") == {"kind": "iwae"}
    assert parse_value("fashion-mnist") == "fashion-mnist"  # a bare word is a string


def test_setting_a_kind_resets_its_parameters():
    cfg = load_config(overrides=["train.elbo.num_particles=5", "train.elbo.kind=iwae"])
    assert cfg["train"]["elbo"] == {"kind": "iwae", "num_particles": 5}
    cfg = load_config(overrides=["model.encoder.kind=conv"])
    assert cfg["model"]["encoder"] == {"kind": "conv"}  # no stray 'hidden' from the mlp default
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides(DEFAULTS, ["train.epochs"])


def test_file_and_overrides(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('[train]\nepochs = 3\nelbo = { kind = "iwae", num_particles = 4 }\n')
    cfg = load_config(f, ["train.epochs=5"])
    assert cfg["train"]["epochs"] == 5 and cfg["train"]["elbo"] == {"kind": "iwae", "num_particles": 4}
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("[train\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(tmp_path / "bad.toml")


def test_dump_toml_round_trips():
    cfg = load_config(overrides=['data.root="a \\"quoted\\" path"', "model.prior={kind='standard_normal'}"])
    assert validate(tomllib.loads(dump_toml(cfg))) == cfg


_values = st.one_of(
    st.integers(-3, 1000),
    st.floats(allow_nan=True),
    st.text(max_size=8),
    st.booleans(),
    st.lists(st.integers(-2, 500), max_size=3),
)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["seed", "device", "data", "model", "train", "eval", "x"]),
        st.one_of(
            _values,
            st.dictionaries(
                st.sampled_from(
                    ["epochs", "beta", "latent_dim", "batch_size", "dataset", "prior", "elbo", "kind", "lr"]
                ),
                st.one_of(
                    _values, st.dictionaries(st.sampled_from(["kind", "num_particles", "alpha"]), _values, max_size=3)
                ),
                max_size=3,
            ),
        ),
        max_size=3,
    )
)
def test_any_config_is_valid_or_a_config_error(raw):
    try:
        cfg = validate(raw)
    except ConfigError:
        return
    assert validate(tomllib.loads(dump_toml(cfg))) == cfg


def test_a_kind_that_is_not_a_name_is_a_config_error_in_every_registry():
    """Hypothesis found {kind = []} crashing with TypeError (a list cannot be a dict key)."""
    from pyro_vae.registry import component_registries

    kinds = ([], {}, 3, 2.5, True, ["standard_normal"])
    for dotted in component_registries():
        section, key = dotted.split(".")
        for kind in kinds:
            with pytest.raises(ConfigError, match="a kind is a name"):
                validate({section: {key: {"kind": kind}}})
    for section, key in (("model", "kind"), ("data", "dataset"), ("model", "layers")):
        for kind in kinds:
            with pytest.raises(ConfigError):
                validate(
                    {"model": {"kind": "hierarchical", "layers": kind}} if key == "layers" else {section: {key: kind}}
                )


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.kl_warmup={kind='linear', epochs=inf}", "train.kl_warmup.epochs must be a positive number, got inf"),
        ("train.kl_warmup={kind='cyclical', cycles=2.0}", "cycles must be an integer >= 1, got 2.0"),
        ("model.prior={kind='student_t', df=nan}", "df must be a positive number, got nan"),
        ("model.likelihood={kind='gaussian', scale=true}", "scale must be a positive number, got True"),
        ("model.likelihood={kind='gaussian', min_scale=-1}", "min_scale must be a number >= 0, got -1"),
        ("model.posterior={kind='diagonal_normal', min_scale=nan}", "min_scale must be a number >= 0"),
        ("train.optimizer.lr=inf", "lr must be a positive number, got inf: try"),
        ("train.elbo.num_particles=2.5", "num_particles must be an integer >= 1, got 2.5"),
        ("seed=4294967296", "seed must be an integer from 0 to 4,294,967,295"),
    ],
)
def test_one_number_check_refuses_booleans_nan_infinity_and_fractions(override, message):
    import torch

    from pyro_vae import build_optimizer, build_vae

    with pytest.raises(ConfigError, match=re.escape(message)):
        cfg = load_config(overrides=[override, "data.dataset=synthetic"])
        build_vae(cfg, (1, 8, 8))
        build_optimizer(cfg, [torch.zeros(1, requires_grad=True)])


def test_one_override_applier_takes_strings_or_a_mapping():
    base = load_config()
    as_strings = apply_overrides(base, ["model.prior.kind=mixture", "train.elbo={kind='iwae', num_particles=3}"])
    as_mapping = apply_overrides(
        base, {"model.prior.kind": "mixture", "train.elbo": {"kind": "iwae", "num_particles": 3}}
    )
    assert validate(as_strings) == validate(as_mapping)
    assert validate(as_mapping)["model"]["prior"] == {"kind": "mixture"}  # the kind reset its parameters
    for bad in ("train.epochs=1", 3, [1]):
        with pytest.raises(ConfigError, match="overrides must be a list"):
            apply_overrides(base, bad)


def test_a_family_specific_key_set_for_a_family_that_ignores_it_warns_once():
    """model.components, model.component_fit, train.aux_loss, train.labelled_weight, data.labels and
    data.labelled_batch are read by some families only; set for another, each says (once) that it has no effect
    and which families read it. Every such key has a reader, and a family that reads it gets no warning."""
    import warnings

    from pyro_vae import FAMILIES, PyroVAEWarning
    from pyro_vae.config.validate import FAMILY_KEYS

    readers = {key: [n for n in FAMILIES.names() if key in FAMILIES.get(n).reads()] for key in FAMILY_KEYS}
    assert all(readers.values()), readers
    odd = {
        "model.components": 7,
        "model.component_fit": 0.25,
        "train.aux_loss": 3.5,
        "train.labelled_weight": 0.5,
        "data.labels": 123,
        "data.labelled_batch": 17,
    }
    assert set(odd) == set(FAMILY_KEYS)
    for key, value in odd.items():
        with pytest.warns(
            PyroVAEWarning,
            match=rf"{re.escape(key)} = {value!r} has no effect with model.kind = "
            rf"'vae'; only {', '.join(readers[key])} read it",
        ):
            load_config(overrides={key: value})
        with warnings.catch_warnings():
            warnings.simplefilter("error", PyroVAEWarning)
            load_config(overrides={key: value})  # said once
            load_config(
                overrides={
                    "model.kind": (kind := readers[key][-1]),
                    **({"data.labels": 100} if kind == "m2" else {}),
                    key: value,
                }
            )  # read: silent
