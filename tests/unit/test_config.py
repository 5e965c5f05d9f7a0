import pytest

from shared.config import BOOL, POSITIVE_FLOAT, POSITIVE_INT, ConfigError, Setting, load


def test_defaults_and_parsing():
    config = load([Setting("SANDESH_A", POSITIVE_INT, default=3), Setting("SANDESH_B", BOOL)],
                  {"SANDESH_B": "yes"})
    assert config.a == 3 and config.b is True


@pytest.mark.parametrize("raw", ["0", "-2.5", "nan", "inf", "soon"])
def test_a_positive_number_refuses_zero_negatives_and_non_numbers(raw):
    with pytest.raises(ConfigError, match="SANDESH_HOURS="):
        load([Setting("SANDESH_HOURS", POSITIVE_FLOAT)], {"SANDESH_HOURS": raw})
    assert load([Setting("SANDESH_HOURS", POSITIVE_FLOAT)],
                {"SANDESH_HOURS": "0.25"}).hours == 0.25


def test_error_names_every_bad_variable_and_hides_secrets():
    with pytest.raises(ConfigError) as info:
        load([Setting("SANDESH_PORT", POSITIVE_INT), Setting("SANDESH_MISSING"),
              Setting("SANDESH_TOKEN", POSITIVE_INT, secret=True)],
             {"SANDESH_PORT": "-1", "SANDESH_TOKEN": "hunter2"})
    message = str(info.value)
    assert "SANDESH_PORT='-1' is invalid" in message
    assert "SANDESH_MISSING is not set" in message
    assert "hunter2" not in message and "SANDESH_TOKEN=<hidden>" in message


def test_a_development_default_is_refused_outside_the_local_environment():
    salt = Setting("SANDESH_PII_SALT", secret=True, dev_default="dev-salt")
    assert load([salt], {"SANDESH_ENV": "local"}).pii_salt == "dev-salt"
    assert load([salt], {}).pii_salt == "dev-salt"
    with pytest.raises(ConfigError, match="SANDESH_PII_SALT is not set"):
        load([salt], {"SANDESH_ENV": "production"})
    assert load([salt], {"SANDESH_ENV": "production", "SANDESH_PII_SALT": "x"}).pii_salt == "x"
