"""The goodness-of-fit verdict of ``tcpmesh send --expect`` and its output, without sockets."""

from __future__ import annotations

import io
import json
import re

import pytest
from rich.console import Console

from tcpmesh.cli import send, stats


def verdict(groups: dict[str, int], expect: str, failures: int = 0, **kw: float) -> stats.Fit:
    return stats.fit(groups, failures, stats.parse_expectation(expect), **kw)


# ---------------------------------------------------------------- --expect parsing


def test_version_keys_name_tcp_echo_prefixes() -> None:
    assert stats.group_for_key("v1") == "one"
    assert stats.group_for_key("v2") == "two"
    assert stats.group_for_key("v3") == "three"
    assert stats.group_for_key("V12") == "twelve"
    assert stats.group_for_key("one") == "one"
    assert stats.group_for_key("v") == "v"
    assert stats.group_for_key("v99") == "v99"
    assert stats.group_for_key("blue") == "blue"


def test_parse_expectation() -> None:
    exp = stats.parse_expectation("v1=80, v2=20")
    assert dict(exp.weights) == {"one": 80.0, "two": 20.0}
    assert exp.label("one") == "v1"
    assert exp.percent("one") == pytest.approx(80.0)
    assert exp.percent("three") == 0.0


def test_weights_are_relative_like_route_weights() -> None:
    exp = stats.parse_expectation("blue=3,green=1,failed=0")
    assert exp.percent("blue") == pytest.approx(75.0)
    assert exp.percent("green") == pytest.approx(25.0)
    assert dict(exp.weights)["failed"] == 0.0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("v1=abc", "--expect entry 'v1=abc': weight 'abc' is not a number"),
        ("v1=80,v2", "--expect entry 'v2' is not NAME=WEIGHT (write it like v1=80,v2=20)"),
        ("=80", "--expect entry '=80' is not NAME=WEIGHT"),
        ("v1=", "--expect entry 'v1=' is not NAME=WEIGHT"),
        ("", "--expect is empty; write it like v1=80,v2=20"),
        ("v1=-5,v2=105", "--expect entry 'v1=-5': weight must be a finite number >= 0"),
        ("v1=nan", "--expect entry 'v1=nan': weight must be a finite number >= 0"),
        ("v1=0,v2=0", "--expect weights add up to 0; at least one must be positive"),
        ("v1=50,one=50", "--expect names 'v1' and 'one', which are the same group ('one')"),
    ],
)
def test_bad_expectations_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(stats.ExpectationError) as info:
        stats.parse_expectation(text)
    assert str(info.value).startswith(message)


# ---------------------------------------------------------------- the verdicts


def test_exact_split_is_consistent() -> None:
    fit = verdict({"one": 800, "two": 200}, "v1=80,v2=20")
    assert fit.test == "binomial"
    assert fit.p_value == pytest.approx(1.0)
    assert fit.consistent


def test_seed_output_ten_connections_is_consistent() -> None:
    # The seed's own sample: 8 "one", 2 "two" out of 10.
    assert verdict({"one": 8, "two": 2}, "v1=80,v2=20").consistent


def test_fair_noise_is_consistent() -> None:
    # 770/230 is off by 3 points of 1000: p is about 0.02, far above 1e-6.
    fit = verdict({"one": 770, "two": 230}, "v1=80,v2=20")
    assert 1e-3 < fit.p_value < 0.1
    assert fit.consistent


def test_clearly_wrong_split_is_inconsistent() -> None:
    fit = verdict({"one": 500, "two": 500}, "v1=80,v2=20")
    assert fit.test == "binomial"
    assert fit.p_value < 1e-50
    assert not fit.consistent


def test_alpha_decides() -> None:
    groups = {"one": 770, "two": 230}
    assert verdict(groups, "v1=80,v2=20", alpha=1e-6).consistent
    assert not verdict(groups, "v1=80,v2=20", alpha=0.05).consistent


def test_hundred_percent_with_one_stray_reply_is_inconsistent() -> None:
    fit = verdict({"one": 999, "two": 1}, "v1=100")
    assert fit.p_value == 0.0
    assert not fit.consistent
    assert "1 'two'" in fit.note


def test_hundred_percent_with_every_reply_in_it_is_consistent() -> None:
    fit = verdict({"one": 50}, "v1=100")
    assert fit.p_value == 1.0
    assert fit.consistent


def test_zero_weight_group_seen_is_inconsistent() -> None:
    assert not verdict({"one": 99, "two": 1}, "v1=100,v2=0").consistent
    assert verdict({"one": 99}, "v1=100,v2=0").consistent


def test_failures_count_against_the_fit() -> None:
    fit = verdict({"one": 80, "two": 20}, "v1=80,v2=20", failures=1)
    assert not fit.consistent
    assert "1 failed connection(s)" in fit.note


def test_failures_listed_in_the_expectation_are_tested_like_a_group() -> None:
    assert verdict({"one": 90}, "v1=90,failed=10", failures=10).consistent
    assert not verdict({"one": 50}, "v1=90,failed=10", failures=50).consistent


def test_all_connections_failed() -> None:
    fit = verdict({}, "v1=80,v2=20", failures=10)
    assert not fit.consistent


def test_more_than_two_groups_use_chi_square_and_say_so() -> None:
    good = verdict({"one": 500, "two": 300, "three": 200}, "v1=50,v2=30,v3=20")
    assert good.test == "chi-square"
    assert "chi-square" in good.note
    assert "multinomial" in good.note
    assert good.consistent
    bad = verdict({"one": 200, "two": 300, "three": 500}, "v1=50,v2=30,v3=20")
    assert not bad.consistent


def test_small_expected_counts_come_with_a_warning() -> None:
    fit = verdict({"one": 3, "two": 1, "three": 1}, "v1=60,v2=20,v3=20")
    assert "rough guide" in fit.note


def test_alpha_must_be_a_probability() -> None:
    with pytest.raises(ValueError, match="alpha"):
        verdict({"one": 1}, "v1=100", alpha=0.0)


# ---------------------------------------------------------------- arguments and output


def test_parse_target() -> None:
    assert send.parse_target("127.0.0.1:31400") == ("127.0.0.1", 31400)
    assert send.parse_target("localhost:9000") == ("localhost", 9000)
    assert send.parse_target("[::1]:80") == ("::1", 80)
    for bad in ("127.0.0.1", "127.0.0.1:", ":80", "h:0", "h:65536", "h:port"):
        with pytest.raises(ValueError, match="is not HOST:PORT"):
            send.parse_target(bad)


def test_date_line_looks_like_date() -> None:
    line = send.date_line()
    assert re.fullmatch(r"[A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \S+ \d{4}", line)


def sample_result() -> send.SendResult:
    return send.SendResult(
        target="127.0.0.1:31400",
        total=10,
        groups={"one": 7, "two": 2},
        failures={"empty": 1},
        elapsed_seconds=0.5,
        samples={"one": "one Mon Nov 12 23:38:45 UTC 2018", "two": "two Mon Nov 12"},
    )


def test_json_document() -> None:
    result = sample_result()
    exp = stats.parse_expectation("v1=80,v2=20")
    fit = stats.fit(result.groups, result.failed, exp)
    doc = send.to_document(result, exp, fit)
    assert json.loads(json.dumps(doc)) == doc
    assert {
        "total",
        "groups",
        "failures",
        "expected",
        "p_value",
        "alpha",
        "consistent",
        "elapsed_seconds",
    } <= set(doc)
    assert doc["total"] == 10
    assert doc["groups"] == {"one": 7, "two": 2}
    assert doc["failures"] == {"empty": 1}
    assert doc["expected"] == {"one": pytest.approx(80.0), "two": pytest.approx(20.0)}
    assert doc["consistent"] is False  # the empty reply is an outcome v1/v2 rules out
    assert doc["p_value"] == 0.0
    assert doc["alpha"] == stats.DEFAULT_ALPHA
    assert doc["connections_per_second"] == pytest.approx(20.0)


def test_json_document_without_expectation() -> None:
    doc = send.to_document(sample_result())
    assert doc["expected"] is None
    assert doc["consistent"] is None
    assert doc["p_value"] is None


def test_text_output_is_plain_without_a_terminal() -> None:
    result = sample_result()
    result.failures = {}
    result.groups = {"one": 8, "two": 2}
    exp = stats.parse_expectation("v1=80,v2=20")
    fit = stats.fit(result.groups, result.failed, exp)
    buf = io.StringIO()
    send.render_text(result, Console(file=buf, width=60), exp, fit)
    text = buf.getvalue()
    assert "\x1b[" not in text
    rows = {line.split()[0]: line.split() for line in text.splitlines() if line.strip()}
    assert rows["one"][1:5] == ["(v1)", "8", "80.0%", "80.0%"]
    assert rows["two"][1:5] == ["(v2)", "2", "20.0%", "20.0%"]
    verdict_line = next(line for line in text.splitlines() if line.startswith("consistent"))
    assert "v1=80,v2=20" in verdict_line
    assert "p = 1 >= alpha 1e-06" in verdict_line
    assert "10 connections to 127.0.0.1:31400 in 0.50s (20.0 connections/s)" in text


def test_text_output_lists_failures_by_reason() -> None:
    result = sample_result()
    result.failures = {"refused": 2, "timeout": 1}
    buf = io.StringIO()
    send.render_text(result, Console(file=buf, width=100))
    line = next(line for line in buf.getvalue().splitlines() if line.startswith("failed"))
    assert line.split()[:3] == ["failed", "3", "30.0%"]
    assert "refused 2, timeout 1" in line


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"expect": "v1=abc"}, "error: --expect entry 'v1=abc': weight 'abc' is not a number"),
        ({"target": "nohost"}, "error: target 'nohost' is not HOST:PORT"),
        ({"message": "two\nlines"}, "error: --message must be a single line"),
        ({"alpha": 0.0}, "error: --alpha must be in (0, 1]"),
    ],
)
def test_main_rejects_bad_arguments_before_connecting(
    kwargs: dict[str, object], message: str
) -> None:
    out, err = io.StringIO(), io.StringIO()
    args: dict[str, object] = {"target": "127.0.0.1:9"} | kwargs
    target = str(args.pop("target"))
    code = send.main(target, stdout=out, stderr=err, **args)  # type: ignore[arg-type]
    assert code == 2
    assert err.getvalue().startswith(message)
    assert out.getvalue() == ""
