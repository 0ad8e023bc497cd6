"""The configuration reference is generated from the code: every key has its line of meaning, and every key and
every registered kind appears in it."""

import pyro_vae
from pyro_vae.config.reference import COMPONENT_KEYS, config_reference
from pyro_vae.config.validate import DEFAULTS, HELP
from pyro_vae.registry import for_key


def keys(table, prefix=""):
    for name, value in table.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict) and key not in COMPONENT_KEYS:
            yield from keys(value, f"{key}.")
        else:
            yield key


def test_every_key_has_one_line_of_meaning_and_no_line_is_left_over():
    assert set(keys(DEFAULTS)) == set(HELP)
    assert all(HELP[k].strip() and "\n" not in HELP[k] for k in HELP)


def test_the_reference_names_every_key_and_every_kind():
    pyro_vae.VAE  # noqa: B018  (the whole API: every registry filled)
    text = config_reference()
    for key in keys(DEFAULTS):
        assert f"| `{key}` |" in text, key
    for key in COMPONENT_KEYS:
        for kind in for_key(key).names():
            assert f"| `{kind}` |" in text, (key, kind)
