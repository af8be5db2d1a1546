import pytest

from scalable_otel.args import (
    MAX_ARGS,
    REDACTED,
    Redaction,
    args_json,
    redact_url,
    summarize_args,
)


def run_simulation(scenario_id, years=20, *, api_key=None, **options):
    pass


def test_arguments_are_named_by_parameter():
    assert summarize_args(run_simulation, (47,), {"years": 5}) == {"scenario_id": 47, "years": 5}


def test_secrets_by_name_or_look_are_redacted():
    summary = summarize_args(
        run_simulation,
        (1,),
        {"api_key": "abc", "password": "hunter2", "note": "AKIAIOSFODNN7EXAMPLE"},
    )
    assert summary["api_key"] == summary["password"] == summary["note"] == REDACTED


def test_values_and_counts_are_bounded():
    summary = summarize_args(run_simulation, ("x" * 1000,), {f"o{i}": i for i in range(40)})
    assert len(summary["scenario_id"]) <= 80
    assert len(summary) == MAX_ARGS + 1 and summary["…"] == f"{41 - MAX_ARGS} more"


def test_no_arguments_no_summary():
    assert args_json(run_simulation, (), {}) is None


def test_words_that_only_contain_a_secret_word_are_kept():
    def f(n_passes, tokens, passport):
        pass

    assert summarize_args(f, (3, 5, "x"), {}) == {"n_passes": 3, "tokens": 5, "passport": "x"}


def test_camel_case_names_are_split_into_words():
    def connect(dbPassword, nPasses):  # noqa: N803
        pass

    assert summarize_args(connect, ("x", 2), {}) == {"dbPassword": REDACTED, "nPasses": 2}


@pytest.mark.parametrize(
    "text",
    [
        "postgres://analyst:hunter2@db.example.org/ensemble",
        "Authorization: Bearer abcdefghijklmnopqrstuvwxyz012345",
        "bearer abcdefghijklmnopqrstuvwxyz012345",
        "AIza" + "B" * 35,
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.c2lnbmF0dXJl",
        "github_pat_" + "A1" * 20,
        "-----BEGIN OPENSSH PRIVATE KEY-----",
        "user=ann;Password=s3cret",
    ],
)
def test_values_that_look_like_secrets_are_redacted(text):
    assert summarize_args(run_simulation, (text,), {}) == {"scenario_id": REDACTED}


def test_a_secret_inside_a_mapping_or_a_list_is_redacted():
    summary = summarize_args(
        run_simulation,
        ({"region": "west", "api_key": "zz"},),
        {"years": ["ok", {"token": "t"}]},
    )
    assert summary == {"scenario_id": REDACTED, "years": REDACTED}


def test_ordinary_values_are_kept():
    kept = ["https://example.org/data.csv", "ratio=0.5", "a:b", "tokenizer", 3.5, None]
    summary = summarize_args(lambda *values: 0, tuple(kept), {})
    assert list(summary.values()) == kept


def test_a_secret_cut_at_the_end_of_the_kept_text_is_still_redacted():
    text = "x" * 75 + "AKIAIOSFODNN7EXAMPLE"
    assert summarize_args(run_simulation, (text,), {})["scenario_id"] == REDACTED


def test_the_user_adds_names_and_value_patterns():
    redaction = Redaction(names=["patient_id", "SSN"], values=[r"\d{3}-\d{2}-\d{4}"])

    def admit(patient_id, PatientId, ssn_hash, note, ward):  # noqa: N803
        pass

    summary = summarize_args(admit, ("p1", "p2", "h", "id 123-45-6789 on file", "B"), {}, redaction)
    assert summary == {
        "patient_id": REDACTED,
        "PatientId": REDACTED,
        "ssn_hash": REDACTED,
        "note": REDACTED,
        "ward": "B",
    }
    # the built-in rules stay
    assert summarize_args(run_simulation, (1,), {"password": "x"}, redaction)["password"] == (
        REDACTED
    )


def test_arguments_can_be_left_out_entirely():
    assert args_json(run_simulation, (1,), {}, Redaction(record_args=False)) is None


def test_redaction_from_the_environment():
    env = {"SCALABLE_REDACT_NAMES": "patient_id, ward", "SCALABLE_RECORD_ARGS": "on"}
    redaction = Redaction.from_env(environ=env)
    assert redaction.record_args and redaction.is_secret_name("ward")
    assert not Redaction.from_env(environ={"SCALABLE_RECORD_ARGS": "off"}).record_args
    # arguments win over the environment
    assert not Redaction.from_env(names=["x"], environ=env).is_secret_name("ward")


def test_a_huge_argument_is_summarized_without_being_written_out():
    shown = []

    class Member:
        def __repr__(self):
            shown.append(self)
            return "m"

    summary = summarize_args(run_simulation, ([Member()] * 1_000_000,), {"years": "y" * 10**7})
    assert summary["scenario_id"].startswith("[m, m") and len(summary["scenario_id"]) <= 80
    assert len(summary["years"]) == 80
    assert len(shown) < 10  # not a million reprs to keep 80 characters


@pytest.mark.parametrize(
    "url, shown",
    [
        ("http://ann:hunter2@otel:4318/v1/traces", "http://otel:4318/v1/traces"),
        ("https://ghp_tokenasuser@example.org/x", "https://example.org/x"),
        ("u:p@w@127.0.0.1:9091", "127.0.0.1:9091"),  # no scheme, '@' in the password
        ("http://ann:pw@host:notaport/x", "http://host:notaport/x"),  # not a valid port
        ("http://h/v1?api_key=abc&env=prod#f", f"http://h/v1?api_key={REDACTED}&env=prod#f"),
        ("http://otel:4318/v1/traces", "http://otel:4318/v1/traces"),
        ("127.0.0.1:4317", "127.0.0.1:4317"),
        ("", ""),
    ],
)
def test_a_url_is_shown_without_its_credentials(url, shown):
    assert redact_url(url) == shown
