from scalable_otel.args import MAX_ARGS, REDACTED, args_json, summarize_args


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
