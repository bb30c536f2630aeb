"""The gathered results table: mean and std over seeds, baselines side by side, P6 costs;
the evaluation partitions of the Dagster project."""

from __future__ import annotations

import pandas as pd
import pytest

from spectralearth.downstream.report import (
    HIGHER,
    LOWER,
    NOISE_UNKNOWN,
    WITHIN_NOISE,
    comparisons,
    noise_verdict,
    results_markdown,
    smoke_test_note,
    summarize,
)
from spectralearth.downstream.run import EVALUATION_COLUMNS, write_evaluations


def _rows(model, protocol, values, seconds, dataset="synth_landcover", split="test", profile=None):
    baseline = model in ("random_init", "random_forest")
    return [
        {
            "model": model,
            "method": "moco" if model.startswith("moco") else "none",
            "backbone": "spec_resnet18" if model != "random_forest" else "none",
            "dataset": dataset,
            "protocol": protocol,
            "label_fraction": 1.0,
            "split": split,
            "seed": seed,
            "metric": "overall_accuracy",
            "value": v,
            "seconds": seconds * (1 + 0.1 * seed),
            "peak_mem_mb": 100.0 + seed,
            "patches": 24 if split == "test" else 8,
            "pixels": 24 * 64 * 64 - 5 if split == "test" else 8 * 64 * 64,
            "profile": "none" if baseline else (profile or "cpu-small"),
        }
        for seed, v in enumerate(values)
    ]


@pytest.fixture
def rows() -> pd.DataFrame:
    return pd.DataFrame(
        _rows("moco-spec_resnet18", "frozen", [0.8, 0.9, 0.85], 10.0)
        + _rows("moco-spec_resnet18", "full", [0.9, 0.92, 0.94], 40.0)
        + _rows("moco-spec_resnet18", "frozen", [0.1, 0.1, 0.1], 10.0, split="val")
        + _rows("random_init", "frozen", [0.5, 0.6, 0.7], 10.0)
        + _rows("random_forest", "rf", [0.7], 5.0),
        columns=list(EVALUATION_COLUMNS),
    )


def test_summary_mean_std_over_seeds_and_time_ratio(rows):
    s = summarize(rows).set_index(["model", "protocol"])
    frozen = s.loc[("moco-spec_resnet18", "frozen")]
    assert frozen["mean"] == pytest.approx(0.85)  # val rows left out
    assert frozen["std"] == pytest.approx(0.05) and frozen["n_seeds"] == 3
    full = s.loc[("moco-spec_resnet18", "full")]
    assert full["seconds_vs_frozen"] == pytest.approx(4.0)
    assert full["peak_mem_mb"] == 102.0
    rf = s.loc[("random_forest", "rf")]
    assert rf["n_seeds"] == 1 and pd.isna(rf["std"])


def test_markdown_puts_baselines_last_side_by_side(rows):
    md = results_markdown(summarize(rows))
    header = md.splitlines()[0]
    cols = [c.strip() for c in header.strip("|").split("|")]
    assert cols[3:] == [
        "moco-spec_resnet18 (frozen)",
        "moco-spec_resnet18 (full)",
        "random_init (frozen)",
        "random_forest",
    ]
    line = md.splitlines()[2]
    assert "0.850 ± 0.050" in line and "0.600 ± 0.100" in line and "| 0.700 |" in line
    assert "mean ± sample std over seeds" in md


def test_tables_state_test_size_seeds_and_noise(rows):
    """The table says how many test patches and labelled pixels it scores (not the val
    split's), how many seeds each column averages, and which differences are noise."""
    md = results_markdown(summarize(rows))
    assert "synth_landcover: 24 patches, 98,299 labelled pixels" in md
    assert "8 patches" not in md  # the val rows' size is not the test split's
    seeds = md.split("Seeds: ")[1].split("\n")[0]
    assert "moco-spec_resnet18 (frozen) 3" in seeds and "random_forest 1" in seeds
    table = comparisons(summarize(rows)).set_index(["model", "baseline"])
    # frozen 0.85 ± 0.05 vs random init 0.60 ± 0.10: 0.25 >= 2 x 0.10
    frozen = table.loc[("moco-spec_resnet18 (frozen)", "random_init (frozen)")]
    assert frozen["difference"] == pytest.approx(0.25) and frozen["verdict"] == HIGHER
    # the forest ran once: the noise is the checkpoint's (2 x 0.05); 0.15 is beyond it
    forest = table.loc[("moco-spec_resnet18 (frozen)", "random_forest")]
    assert forest["verdict"] == HIGHER
    # random init is compared under the same protocol only: full has no random init
    assert ("moco-spec_resnet18 (full)", "random_init (frozen)") not in table.index
    assert "**Against the baselines.**" in md and "within noise" in md


@pytest.mark.parametrize(
    ("a", "b", "verdict"),
    [
        ((0.81, 0.05, 3), (0.70, 0.04, 3), HIGHER),  # 0.11 >= 2 x 0.05: counts
        ((0.80, 0.06, 3), (0.70, 0.04, 3), WITHIN_NOISE),  # 0.10 < 2 x 0.06
        ((0.60, 0.01, 3), (0.70, 0.02, 3), LOWER),
        ((0.80, float("nan"), 1), (0.70, float("nan"), 1), NOISE_UNKNOWN),
        ((0.71, float("nan"), 1), (0.70, 0.01, 3), WITHIN_NOISE),  # one side's std
        ((0.70, 0.0, 3), (0.70, 0.0, 3), WITHIN_NOISE),  # identical, no spread
    ],
)
def test_noise_rule(a, b, verdict):
    assert noise_verdict(*a, *b) == verdict


def test_a_difference_within_noise_is_called_so(rows):
    close = pd.DataFrame(
        _rows("moco-spec_resnet18", "frozen", [0.62, 0.70, 0.66], 10.0)
        + _rows("random_init", "frozen", [0.5, 0.6, 0.7], 10.0),
        columns=list(EVALUATION_COLUMNS),
    )
    table = comparisons(summarize(close))
    assert list(table["verdict"]) == [WITHIN_NOISE]
    assert "| +0.060 | within noise |" in results_markdown(summarize(close))


def test_a_smoke_test_checkpoint_is_labelled_so(rows):
    """`make run`'s cpu-tiny checkpoint: the report says its numbers are a smoke test; a
    checkpoint of another profile gets no such line."""
    assert smoke_test_note(summarize(rows)) is None
    assert "Smoke test" not in results_markdown(summarize(rows))
    tiny = pd.DataFrame(
        _rows("moco-spec_resnet18", "frozen", [0.8], 10.0, profile="cpu-tiny")
        + _rows("random_init", "frozen", [0.5], 10.0),
        columns=list(EVALUATION_COLUMNS),
    )
    md = results_markdown(summarize(tiny))
    assert md.startswith("**Smoke test, not a result.** moco-spec_resnet18 (profile cpu-tiny)")
    assert "noise unknown (one seed)" in md and "Test split, one seed." in md


def test_rows_written_before_sizes_and_profiles_still_summarise(rows):
    old = rows.drop(columns=["patches", "pixels", "profile"])
    s = summarize(old)
    assert s["patches"].isna().all() and set(s["profile"]) == {"unknown"}
    md = results_markdown(s)
    assert "synth_landcover: size not recorded" in md and "Smoke test" not in md


def test_benchmark_results_gathers_every_partition(rows, tmp_path):
    from spectralearth.layout import EvaluationKey, ResultsLayout
    from spectralearth.stages.evaluate import benchmark_results, results_table

    results = ResultsLayout(tmp_path / "results")
    for (model, protocol), part in rows.groupby(["model", "protocol"]):
        head = "none" if protocol == "rf" else "linear"
        key = EvaluationKey(
            model, "synth_landcover", "none" if protocol == "rf" else protocol, head
        )
        write_evaluations(part, results.csv(key))
    info = benchmark_results(results)
    assert info.evaluations == 4 and len(info.rows) == len(rows)
    assert len(pd.read_csv(results.all_rows)) == len(rows)
    bench = pd.read_csv(results.benchmark)
    assert {"mean", "std", "n_seeds", "seconds", "peak_mem_mb", "seconds_vs_frozen"} <= set(bench)
    report = results.report.read_text()
    assert "## Cost per protocol (P6)" in report and "| 4.00 |" in report
    assert "random_forest" in results_table(results)
    # report.md, the CLI table and the Dagster metadata (the report) carry size and noise
    for text in (report, results_table(results), str(info.metadata()["report"])):
        assert "24 patches, 98,299 labelled pixels" in text and "**Against the baselines.**" in text


def test_default_requests_give_the_forest_one_name_and_no_protocol(tmp_path):
    from spectralearth.config import load_settings
    from spectralearth.stages.evaluate import EvaluationRequest, default_requests, evaluate
    from tests.helpers import write_params

    s = load_settings(
        write_params(tmp_path, evaluate={"baselines": ["random_init", "random_forest"]})
    )
    got = [(r.model, r.dataset, r.protocol, r.head) for r in default_requests(s)]
    assert got == [
        ("moco-spec_resnet18", "synth_landcover", "frozen", "linear"),
        ("random_init", "synth_landcover", "frozen", "linear"),
        ("random_forest", "synth_landcover", "none", "none"),
    ]
    wrong = EvaluationRequest("random_forest", "synth_landcover", "full", "linear")
    with pytest.raises(ValueError, match="has no protocol"):
        evaluate(wrong, s.evaluate, s.layout, s.layout.results, s.tracking, default_backbone="x")


def test_heads_are_told_apart_and_old_rows_count_as_linear(rows):
    """Rows without a head (written before dense heads) are the linear probe's; an FCN-head
    run of the same model and protocol gets its own column and its own time ratio."""
    fcn = pd.DataFrame(
        _rows("moco-spec_resnet18", "frozen", [0.95, 0.97], 100.0)
        + _rows("moco-spec_resnet18", "full", [0.96, 0.98], 300.0),
        columns=list(EVALUATION_COLUMNS),
    ).assign(head="fcn")
    s = summarize(pd.concat([rows, fcn], ignore_index=True))
    by = s.set_index(["model", "protocol", "head"])
    assert by.loc[("moco-spec_resnet18", "frozen", "linear"), "mean"] == pytest.approx(0.85)
    assert by.loc[("moco-spec_resnet18", "frozen", "fcn"), "mean"] == pytest.approx(0.96)
    assert by.loc[("moco-spec_resnet18", "full", "fcn"), "seconds_vs_frozen"] == pytest.approx(3.0)
    assert by.loc[("moco-spec_resnet18", "full", "linear"), "seconds_vs_frozen"] == pytest.approx(
        4.0
    )
    header = results_markdown(s).splitlines()[0]
    cols = [c.strip() for c in header.strip("|").split("|")]
    assert {"moco-spec_resnet18 (frozen)", "moco-spec_resnet18 (frozen, fcn head)"} <= set(cols)
