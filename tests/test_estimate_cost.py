"""Tests for qpyr.estimate.prices (price table loader) and qpyr.estimate.cost."""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qpyr.estimate import cost, prices
from qpyr.estimate.cost import (
    BYTES_PER_GB,
    DAYS_PER_MONTH,
    CostInputError,
    Layout,
    ReadPattern,
    Usage,
    billable_bytes,
    estimate_all,
    estimate_cost,
)
from qpyr.estimate.prices import (
    PriceTable,
    PriceTableError,
    StorageClass,
    UnknownStorageClassError,
    load_prices,
    shipped_prices_text,
)

PKG = Path(prices.__file__).parent
TB = 10**12


@pytest.fixture(scope="module")
def table() -> PriceTable:
    return load_prices()


def shipped_dict() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(shipped_prices_text())
    return data


def write(tmp_path: Path, data: Any, name: str = "prices.json") -> Path:
    p = tmp_path / name
    p.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return p


# ----------------------------------------------------------------- shipped table


def test_shipped_table_validates_against_schema() -> None:
    schema = json.loads((PKG / "prices.schema.json").read_text("utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(shipped_dict())


def test_schema_forbids_additional_properties_everywhere() -> None:
    schema = json.loads((PKG / "prices.schema.json").read_text("utf-8"))
    objects: list[dict[str, Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "object":
                objects.append(node)
            for v in node.values():
                walk(v)

    walk(schema)
    assert len(objects) >= 3
    for obj in objects:
        assert "additionalProperties" in obj
        ap = obj["additionalProperties"]
        assert ap is False or "$ref" in ap  # maps of named entries use a strict $ref


EXPECTED_CLASSES = {
    "aws-s3:standard",
    "aws-s3:standard-ia",
    "aws-s3:glacier-ir",
    "aws-s3:deep-archive",
    "gcs:standard",
    "gcs:nearline",
    "gcs:coldline",
    "gcs:archive",
    "azure-blob:hot",
    "azure-blob:cool",
    "azure-blob:cold",
    "azure-blob:archive",
    "cloudflare-r2:standard",
    "cloudflare-r2:infrequent-access",
    "backblaze-b2:standard",
}


def test_shipped_table_has_required_classes(table: PriceTable) -> None:
    assert EXPECTED_CLASSES <= set(table.keys())
    assert table.currency == "USD"
    assert table.version == 1


def test_every_class_has_as_of_and_source(table: PriceTable) -> None:
    for sc in table:
        assert sc.as_of.startswith("2026"), sc.key
        assert len(sc.source.strip()) > 20, sc.key


def test_reference_figures(table: PriceTable) -> None:
    s3 = table.get("aws-s3:standard")
    assert (s3.storage_per_gb_month, s3.write_per_1k, s3.read_per_1k) == (0.023, 0.005, 0.0004)
    assert (s3.egress_per_gb, s3.egress_free_gb_per_month) == (0.09, 100)
    ia = table.get("aws-s3:standard-ia")
    assert ia.min_billable_object_bytes == 128 * 1024 and ia.min_storage_days == 30
    assert table.get("aws-s3:glacier-ir").min_billable_object_bytes == 128 * 1024
    da = table.get("aws-s3:deep-archive")
    assert da.storage_per_gb_month == 0.00099
    assert da.overhead_bytes_per_object + da.overhead_standard_bytes_per_object == 40 * 1024
    assert da.overhead_standard_per_gb_month == s3.storage_per_gb_month
    assert [table.get(f"gcs:{c}").storage_per_gb_month for c in
            ("standard", "nearline", "coldline", "archive")] == [0.020, 0.010, 0.004, 0.0012]
    assert [table.get(f"azure-blob:{c}").storage_per_gb_month for c in
            ("hot", "cool", "cold", "archive")] == [0.0184, 0.01, 0.0036, 0.002]
    r2 = table.get("cloudflare-r2:standard")
    assert (r2.storage_per_gb_month, r2.egress_per_gb) == (0.015, 0.0)
    assert r2.write_per_1k * 1000 == pytest.approx(4.50)
    assert r2.read_per_1k * 1000 == pytest.approx(0.36)
    b2 = table.get("backblaze-b2:standard")
    assert (b2.storage_per_gb_month, b2.write_per_1k, b2.egress_per_gb) == (0.006, 0.0, 0.01)
    assert b2.read_per_1k * 10 == pytest.approx(0.004)


# ------------------------------------------------------------- malformed files


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(d: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        for p in parents:
            d = d[p]
        d[last] = value

    return edit


def _delete(path: str) -> Callable[[dict[str, Any]], None]:
    def edit(d: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        for p in parents:
            d = d[p]
        del d[last]

    return edit


STD = "providers.aws-s3.classes.standard"


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (_delete(f"{STD}.write_per_1k"), f"{STD}.write_per_1k: required field is missing"),
        (_delete(f"{STD}.source"), f"{STD}.source: required field is missing"),
        (_delete(f"{STD}.as_of"), f"{STD}.as_of: required field is missing"),
        (_delete("as_of"), "as_of: required field is missing"),
        (
            _set(f"{STD}.storage_per_gb_month", "abc"),
            f'{STD}.storage_per_gb_month: expected a non-negative number, got "abc"',
        ),
        (
            _set(f"{STD}.read_per_1k", -0.01),
            f"{STD}.read_per_1k: expected a non-negative number, got -0.01",
        ),
        (
            _set(f"{STD}.min_storage_days", 1.5),
            f"{STD}.min_storage_days: expected a non-negative integer, got 1.5",
        ),
        (
            _set(f"{STD}.egress_per_gb", True),
            f"{STD}.egress_per_gb: expected a non-negative number, got true",
        ),
        (_set(f"{STD}.bogus", 1), f"{STD}.bogus: unknown field"),
        (_set("providers.gcs.bogus", 1), "providers.gcs.bogus: unknown field"),
        (_set("extra", 1), "extra: unknown field"),
        (_set("version", 2), "version: expected 1, got 2"),
        (_set("format", "other"), 'format: expected "qpyr-prices"'),
        (_set(f"{STD}.as_of", "2026/01"), f"{STD}.as_of: expected a date YYYY-MM or YYYY-MM-DD"),
        (_set(f"{STD}.as_of", "2026-02-30"), f"{STD}.as_of: not a real date"),
        (_set(f"{STD}.source", ""), f"{STD}.source: must not be empty"),
        (_set("providers.Bad_Name", {}), "invalid name"),
        (_set("providers.aws-s3.classes", {}), "providers.aws-s3.classes: must list at least one"),
    ],
)
def test_malformed_table_names_field_and_file(
    tmp_path: Path, edit: Callable[[dict[str, Any]], None], expected: str
) -> None:
    data = shipped_dict()
    edit(data)
    path = write(tmp_path, data)
    with pytest.raises(PriceTableError) as info:
        load_prices(path)
    msg = str(info.value)
    assert str(path) in msg
    assert expected in msg


def test_bad_json_names_file_and_position(tmp_path: Path) -> None:
    path = write(tmp_path, '{"format": "qpyr-prices",\n  "version": 1,,}')
    with pytest.raises(PriceTableError, match=r"invalid JSON at line 2") as info:
        load_prices(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_numbers_rejected(tmp_path: Path, literal: str) -> None:
    text = json.dumps(shipped_dict(), indent=1).replace(
        '"storage_per_gb_month": 0.023', f'"storage_per_gb_month": {literal}', 1
    )
    assert literal in text
    with pytest.raises(PriceTableError, match=rf"{STD}.storage_per_gb_month: .*non-finite"):
        load_prices(write(tmp_path, text))


def test_missing_file_names_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    with pytest.raises(PriceTableError, match="nope.json"):
        load_prices(missing)


def test_non_object_top_level(tmp_path: Path) -> None:
    with pytest.raises(PriceTableError, match=r"\(top level\): expected an object, got \[\]"):
        load_prices(write(tmp_path, "[]"))


def test_error_classes() -> None:
    from qpyr.errors import QpyrError

    assert issubclass(UnknownStorageClassError, PriceTableError)
    assert issubclass(PriceTableError, QpyrError)
    assert issubclass(CostInputError, QpyrError)
    assert issubclass(CostInputError, ValueError)


# ------------------------------------------------------------------- lookups


def test_get_known(table: PriceTable) -> None:
    sc = table.get("aws-s3:standard-ia")
    assert isinstance(sc, StorageClass)
    assert (sc.provider, sc.name, sc.key) == ("aws-s3", "standard-ia", "aws-s3:standard-ia")
    assert table.get(" AWS-S3:Standard-IA ") is sc


@pytest.mark.parametrize("key", ["aws-s3:standard_ia", "nope:standard", "aws-s3", ""])
def test_get_unknown_lists_known_names(table: PriceTable, key: str) -> None:
    with pytest.raises(UnknownStorageClassError) as info:
        table.get(key)
    msg = str(info.value)
    assert repr(key) in msg
    for known in EXPECTED_CLASSES:
        assert known in msg


def test_get_unknown_suggests_close_match(table: PriceTable) -> None:
    with pytest.raises(PriceTableError, match="Did you mean 'aws-s3:standard-ia'"):
        table.get("aws-s3:standard_ia")


# --------------------------------------------------------- --prices round trip


def test_prices_override_round_trip(tmp_path: Path, table: PriceTable) -> None:
    path = write(tmp_path, json.dumps(table.to_dict(), indent=2))
    again = load_prices(path)
    assert again == table
    assert again.origin == str(path)
    # Edit one price, as a user would for --prices, and see it used.
    data = copy.deepcopy(table.to_dict())
    data["providers"]["aws-s3"]["classes"]["standard"]["storage_per_gb_month"] = 0.021
    data["providers"]["mycloud"] = {
        "display_name": "My Cloud",
        "region": "on-prem",
        "classes": {"disk": dict(data["providers"]["aws-s3"]["classes"]["standard"])},
    }
    edited = load_prices(write(tmp_path, data, "edited.json"))
    assert edited != table
    assert edited.get("aws-s3:standard").storage_per_gb_month == 0.021
    layout = Layout(total_bytes=TB, objects=1)
    r = estimate_cost(edited.get("mycloud:disk"), layout, Usage(months=1))
    assert r.storage_per_month == pytest.approx(21.0)
    assert r.storage_class == "mycloud:disk"


def test_shipped_text_equals_load_of_itself(tmp_path: Path, table: PriceTable) -> None:
    assert load_prices(write(tmp_path, shipped_prices_text())) == table


# ------------------------------------------------------------- cost: by hand


def test_one_tb_s3_standard_twelve_months(table: PriceTable) -> None:
    r = estimate_cost(table.get("aws-s3:standard"), Layout(TB, 1000), Usage(months=12))
    assert r.billable_bytes == TB
    assert r.storage_per_month == pytest.approx(23.0)
    assert r.storage_total == pytest.approx(23.0 * 12)
    assert r.write_once == pytest.approx(1000 / 1000 * 0.005)
    assert r.reads_per_month == 0 and r.egress_per_month == 0
    assert r.total_over_months == pytest.approx(23.0 * 12 + 0.005)


def test_small_objects_in_standard_ia_billed_at_128_kib(table: PriceTable) -> None:
    ia = table.get("aws-s3:standard-ia")
    n = 1_000_000
    expected_bytes = n * 131072
    for layout in (
        Layout(total_bytes=n * 10_000, objects=n),
        Layout.from_histogram({10_000: n}),
    ):
        r = estimate_cost(ia, layout, Usage(months=1))
        assert r.billable_bytes == expected_bytes
        assert r.storage_per_month == pytest.approx(131.072 * 0.0125)
        assert r.write_once == pytest.approx(1000 * 0.01)


def test_mixed_sizes_are_exact_only_with_sizes(table: PriceTable) -> None:
    ia = table.get("aws-s3:standard-ia")
    sizes = [1_000, 200_000]
    exact = Layout.from_sizes(sizes)
    assert billable_bytes(ia, exact) == 131072 + 200_000
    assert billable_bytes(ia, Layout.from_histogram([(1_000, 1), (200_000, 1)])) == 331072
    # Without sizes the mean-size assumption is a lower bound.
    approx = Layout(total_bytes=201_000, objects=2)
    assert billable_bytes(ia, approx) == 262144
    assert billable_bytes(ia, approx) <= billable_bytes(ia, exact)
    # Classes without a minimum bill the raw bytes.
    assert billable_bytes(table.get("aws-s3:standard"), exact) == 201_000


def test_deep_archive_per_object_overhead(table: PriceTable) -> None:
    da = table.get("aws-s3:deep-archive")
    n = 1_000_000
    r = estimate_cost(da, Layout(total_bytes=n * 10**6, objects=n), Usage(months=12))
    assert r.billable_bytes == n * 10**6 + n * 40960
    per_month = (1000 + 32.768) * 0.00099 + 8.192 * 0.023
    assert r.storage_per_month == pytest.approx(per_month)
    assert r.storage_total == pytest.approx(per_month * 12)


def test_reads_requests_and_retrieval(table: PriceTable) -> None:
    ia = table.get("aws-s3:standard-ia")
    n = 1_000_000
    r = estimate_cost(ia, Layout(n * 10_000, n), Usage(months=3, reads_per_month=2))
    assert r.read_requests_per_month == 2 * n
    assert r.read_bytes_per_month == 2 * n * 10_000
    # 2M GETs at $0.001/1k + 20 GB retrieval at $0.01/GB (retrieval on bytes actually read)
    assert r.reads_per_month == pytest.approx(2.0 + 0.2)
    assert r.egress_per_month == 0.0
    assert r.total_over_months == pytest.approx(r.write_once + r.storage_total + 3 * 2.2)


def test_partial_read_patterns(table: PriceTable) -> None:
    s3 = table.get("aws-s3:standard")
    level = ReadPattern(bytes_per_read=5 * 10**9, requests_per_read=20_000, reads_per_month=10)
    usage = Usage(months=1, reads_per_month=0, read_patterns=(level,), egress_fraction=1.0)
    r = estimate_cost(s3, Layout(TB, 10**6), usage)
    assert r.read_requests_per_month == 200_000
    assert r.reads_per_month == pytest.approx(200 * 0.0004)
    assert r.egress_bytes_per_month == 50 * 10**9
    assert r.egress_per_month == 0.0  # 50 GB is inside the 100 GB free allowance


def test_egress_allowance_and_free_egress(table: PriceTable) -> None:
    layout = Layout(TB, 1000)
    usage = Usage(months=1, reads_per_month=1, egress_fraction=1.0)  # 1000 GB out
    assert estimate_cost(table.get("aws-s3:standard"), layout, usage).egress_per_month == (
        pytest.approx((1000 - 100) * 0.09)
    )
    assert estimate_cost(table.get("gcs:standard"), layout, usage).egress_per_month == (
        pytest.approx(1000 * 0.12)
    )
    for key in ("cloudflare-r2:standard", "cloudflare-r2:infrequent-access"):
        assert estimate_cost(table.get(key), layout, usage).egress_per_month == 0.0
    b2 = table.get("backblaze-b2:standard")
    # B2: free up to 3x stored; 1 TB stored -> 3000 GB free.
    assert estimate_cost(b2, layout, Usage(1, 2, egress_fraction=1.0)).egress_per_month == 0.0
    four = estimate_cost(b2, layout, Usage(1, 4, egress_fraction=1.0))
    assert four.egress_per_month == pytest.approx(1000 * 0.01)
    half = estimate_cost(table.get("aws-s3:standard"), layout, Usage(1, 1, egress_fraction=0.5))
    assert half.egress_bytes_per_month == 500 * 10**9
    assert half.egress_per_month == pytest.approx(400 * 0.09)


def test_minimum_storage_duration(table: PriceTable) -> None:
    layout = Layout(TB, 1000)
    ia = table.get("aws-s3:standard-ia")
    r = estimate_cost(ia, layout, Usage(months=0.5))
    assert r.billed_months == pytest.approx(30 / DAYS_PER_MONTH)
    assert r.storage_total == pytest.approx(12.5 * 30 / DAYS_PER_MONTH)
    assert estimate_cost(ia, layout, Usage(months=2)).billed_months == 2
    arch = table.get("gcs:archive")
    r = estimate_cost(arch, layout, Usage(months=1))
    assert r.billed_months == pytest.approx(12.0)  # 365 days
    assert r.storage_total == pytest.approx(1.2 * 12)
    assert estimate_cost(arch, layout, Usage(months=12)).billed_months == pytest.approx(12.0)
    gir = estimate_cost(table.get("aws-s3:glacier-ir"), layout, Usage(months=1))
    assert gir.billed_months == pytest.approx(90 * 12 / 365)
    # months=0: write and delete at once still pays the minimum; no minimum -> 0.
    assert estimate_cost(ia, layout, Usage(months=0)).storage_total > 0
    assert estimate_cost(table.get("aws-s3:standard"), layout, Usage(0)).storage_total == 0


def test_empty_corpus_costs_nothing(table: PriceTable) -> None:
    for sc in table:
        r = estimate_cost(sc, Layout(0, 0), Usage(months=12, reads_per_month=5, egress_fraction=1))
        assert r.total_over_months == 0.0


def test_estimate_all_sorted_and_filtered(table: PriceTable) -> None:
    results = estimate_all(table, Layout(TB, 1000), Usage(months=12))
    assert len(results) == len(table.keys())
    totals = [r.total_over_months for r in results]
    assert totals == sorted(totals)
    two = estimate_all(table, Layout(TB, 1000), Usage(12), keys=["gcs:standard", "aws-s3:standard"])
    assert [r.storage_class for r in two] == ["gcs:standard", "aws-s3:standard"]
    with pytest.raises(UnknownStorageClassError):
        estimate_all(table, Layout(TB, 1), Usage(1), keys=["nope:x"])


def test_units_constants() -> None:
    assert BYTES_PER_GB == 10**9
    assert DAYS_PER_MONTH * 12 == pytest.approx(365)


# ------------------------------------------------------------ cost: validation


@pytest.mark.parametrize(
    ("make", "parameter"),
    [
        (lambda: Layout(total_bytes=-1, objects=1), "total_bytes"),
        (lambda: Layout(total_bytes=math.nan, objects=1), "total_bytes"),
        (lambda: Layout(total_bytes=math.inf, objects=1), "total_bytes"),
        (lambda: Layout(total_bytes="1", objects=1), "total_bytes"),  # type: ignore[arg-type]
        (lambda: Layout(total_bytes=1, objects=-1), "objects"),
        (lambda: Layout(total_bytes=1, objects=1.5), "objects"),  # type: ignore[arg-type]
        (lambda: Layout(total_bytes=1, objects=True), "objects"),
        (lambda: Layout(total_bytes=10, objects=0), "objects"),
        (lambda: Layout(total_bytes=10, objects=2, object_sizes=(5,)), "object_sizes"),
        (lambda: Layout(total_bytes=10, objects=2, object_sizes=(5, 6)), "object_sizes"),
        (lambda: Layout.from_sizes([1, -2]), "object_sizes[1]"),
        (lambda: Layout.from_histogram({100: -1}), "size_histogram[0].count"),
        (lambda: Layout.from_histogram([(math.nan, 1)]), "size_histogram[0].size"),
        (lambda: Layout(total_bytes=10, objects=3, size_histogram=((5, 2),)), "size_histogram"),
        (lambda: Usage(months=-1), "months"),
        (lambda: Usage(months=math.inf), "months"),
        (lambda: Usage(months=1, reads_per_month=-0.5), "reads_per_month"),
        (lambda: Usage(months=1, reads_per_month=math.nan), "reads_per_month"),
        (lambda: Usage(months=1, egress_fraction=1.5), "egress_fraction"),
        (lambda: Usage(months=1, egress_fraction=-0.1), "egress_fraction"),
        (lambda: ReadPattern(bytes_per_read=-1, requests_per_read=1, reads_per_month=1),
         "bytes_per_read"),
        (lambda: ReadPattern(bytes_per_read=1, requests_per_read=math.nan, reads_per_month=1),
         "requests_per_read"),
        (lambda: Usage(months=1, read_patterns=((1, 2, 3),)), "read_patterns[0]"),  # type: ignore[arg-type]
    ],
)
def test_invalid_inputs_name_the_parameter(make: Callable[[], object], parameter: str) -> None:
    with pytest.raises(CostInputError) as info:
        make()
    assert isinstance(info.value, ValueError)
    assert info.value.parameter == parameter
    assert str(info.value).startswith(f"{parameter}:")


# ------------------------------------------------------------- cost: properties

sizes_st = st.lists(st.integers(min_value=0, max_value=10**7), min_size=1, max_size=50)


@settings(max_examples=60, deadline=None)
@given(sizes=sizes_st, months=st.floats(min_value=0, max_value=120))
def test_properties(sizes: list[int], months: float) -> None:
    table = load_prices()
    exact = Layout.from_sizes(sizes)
    hist: dict[int, int] = {}
    for s in sizes:
        hist[s] = hist.get(s, 0) + 1
    mean = Layout(total_bytes=sum(sizes), objects=len(sizes))
    for sc in table:
        b = billable_bytes(sc, exact)
        assert b >= sum(sizes)
        assert b == pytest.approx(billable_bytes(sc, Layout.from_histogram(hist)))
        assert billable_bytes(sc, mean) <= b * (1 + 1e-12)
        r = estimate_cost(sc, exact, Usage(months=months, reads_per_month=1, egress_fraction=1))
        assert r.storage_total >= r.storage_per_month * months * (1 - 1e-12)
        assert r.total_over_months >= 0 and math.isfinite(r.total_over_months)
        assert cost.estimate_cost(sc, exact, Usage(months=months)).total_over_months <= (
            r.total_over_months + 1e-12
        )
