"""The SQL vocabulary analytics may use: functions, operators, clauses and types, as sqlglot node types.

The guard (`sql_guard.py`) refuses every node of a parsed query that is not listed here. An allow-list,
not a deny-list, because PostgreSQL has thousands of built-ins and several run SQL written in a string
(`ts_stat`, `ts_rewrite`, `query_to_xml`, `database_to_xml_and_xmlschema`, ...): a deny-list is beaten by
the first one it forgot. The lists grew from what real analytics SQL uses (the demo and Defog gold
queries, the PostgreSQL manual's aggregate, window, date/time, math and string chapters), never from
what a refused query happened to need.

Names are sqlglot class names (looked up with `getattr`, so a class missing from a future sqlglot is
simply not allowed), plus plain PostgreSQL names for functions sqlglot parses as `exp.Anonymous`.
"""

from __future__ import annotations

from sqlglot import exp


def _classes(names: str) -> frozenset[type[exp.Expr]]:  # Expr: the base of Func and Expression alike
    return frozenset(getattr(exp, name) for name in names.split() if hasattr(exp, name))


# Functions sqlglot models as their own class (the PostgreSQL names they come from are in comments
# where they differ).
FUNCTION_CLASSES = _classes(
    # aggregates
    "Count Sum Avg Min Max ArrayAgg GroupConcat Stddev StddevPop StddevSamp Variance VariancePop Corr "
    "CovarPop CovarSamp PercentileCont PercentileDisc Median Mode LogicalAnd LogicalOr AnyValue "  # bool_and/or
    "BitwiseAndAgg BitwiseOrAgg BitwiseXorAgg JSONArrayAgg JSONObjectAgg JSONBObjectAgg Grouping "
    "RegrSlope RegrIntercept RegrR2 RegrCount RegrAvgx RegrAvgy RegrSxx RegrSxy RegrSyy CountIf "
    # window functions
    "RowNumber Rank DenseRank PercentRank CumeDist Ntile Lag Lead FirstValue LastValue NthValue "
    # date and time (TimeToStr is to_char, StrToDate/StrToTime to_date/to_timestamp)
    "CurrentDate CurrentTime CurrentTimestamp Localtime Localtimestamp Extract TimestampTrunc DateTrunc "
    "TimeToStr StrToDate StrToTime UnixToTime JustifyDays JustifyHours JustifyInterval MakeInterval "
    "DateBin TimestampFromParts DateFromParts Date "  # make_timestamp, make_date
    # math
    "Abs Round Ceil Floor Trunc Sqrt Cbrt Pow Exp Ln Log Sign Mod Greatest Least Pi Degrees Radians "
    "WidthBucket IntDiv Rand Acos Asin Atan Atan2 Cos Sin Tan Cot Factorial "
    # strings
    "Lower Upper Initcap Concat ConcatWs Substring Trim Replace SplitPart Length StrPosition Left Right "
    "Pad Reverse Translate Ascii Chr Format RegexpReplace RegexpLike RegexpILike RegexpExtract "
    "StartsWith Overlay ToNumber Hex MD5 BitLength ByteLength StringToArray ArrayToString Encode Decode "
    # conditionals, casts, logic
    "Case If Coalesce Nullif Cast TryCast And Or Xor Exists Collate "
    # arrays, JSON, set-returning helpers
    "Array ArraySize ArrayPosition ArrayAppend ArrayConcat ArrayRemove ArrayContains ArrayContainsAll "
    "ArrayOverlaps ArrayContainedBy Explode Unnest JSONExtract JSONExtractScalar JSONBExtract "
    "JSONBExtractScalar JSONBContains JSONObject JSONArray ExplodingGenerateSeries GenerateSeries"
)

# Set-returning functions whose row count the guard bounds (see sql_guard._check_series).
SERIES_CLASSES = _classes("ExplodingGenerateSeries GenerateSeries")

# PostgreSQL functions sqlglot parses as exp.Anonymous; lower-case, unqualified names only (a
# schema-qualified call is refused: it can reach the company's own functions).
FUNCTION_NAMES = frozenset(
    """
    age make_date make_time make_timestamptz date_part isfinite clock_timestamp statement_timestamp
    transaction_timestamp timeofday to_timestamp timezone
    every string_agg array_agg json_agg jsonb_agg json_object_agg jsonb_object_agg count sum avg min max
    octet_length char_length bit_length lpad rpad btrim ltrim rtrim strpos substr initcap to_ascii
    regexp_match regexp_matches regexp_split_to_table regexp_split_to_array regexp_count regexp_substr
    regexp_instr quote_ident quote_literal quote_nullable
    gcd lcm div scale trim_scale min_scale ceiling power trunc log10 sqrt cbrt sinh cosh tanh
    cardinality array_upper array_lower array_ndims array_dims array_fill array_replace array_positions
    array_prepend num_nonnulls num_nulls row
    text numeric int2 int4 int8 float4 float8 bool varchar
    json_build_object jsonb_build_object json_build_array jsonb_build_array to_json to_jsonb row_to_json
    array_to_json json_array_length jsonb_array_length json_typeof jsonb_typeof json_extract_path
    jsonb_extract_path json_extract_path_text jsonb_extract_path_text json_array_elements
    jsonb_array_elements json_array_elements_text jsonb_array_elements_text json_each jsonb_each
    json_each_text jsonb_each_text json_object_keys jsonb_object_keys jsonb_strip_nulls jsonb_pretty
    to_tsvector to_tsquery plainto_tsquery phraseto_tsquery websearch_to_tsquery ts_rank ts_rank_cd
    ts_headline
    """.split()
)

# Clauses, operators and literals: every non-function node a query may contain.
SYNTAX_CLASSES = _classes(
    # query structure
    "Select Union Intersect Except From Join Where Group Having Order Ordered Limit Offset Fetch "
    "Distinct With CTE Subquery Alias TableAlias Table Column ColumnDef Identifier Star Values Lateral "
    "Window WindowSpec Filter WithinGroup IgnoreNulls RespectNulls Cube Rollup GroupingSets Qualify "
    # literals
    "Literal Null Boolean DataType DataTypeParam Var Interval IntervalSpan Tuple Paren Bracket Slice "
    "ByteString RawString UnicodeString BitString HexString "
    "Kwarg JSONPath JSONPathRoot JSONPathKey JSONPathSubscript "
    # operators
    "Add Sub Mul Div IntDiv Mod Pow Neg Not EQ NEQ GT GTE LT LTE Is In Between Like ILike SimilarTo DPipe "
    "NullSafeEQ NullSafeNEQ Any All Escape Overlaps AtTimeZone BitwiseAnd BitwiseOr BitwiseXor "
    "BitwiseNot BitwiseLeftShift BitwiseRightShift Dot"
)

# Types a value may be cast to. Not the reg* catalog types (`'pg_authid'::regclass`), xml, or types
# of the company's own (USERDEFINED).
_T = exp.DataType.Type
DATA_TYPES = frozenset(
    getattr(_T, name)
    for name in (
        "SMALLINT INT BIGINT TINYINT DECIMAL BIGDECIMAL FLOAT DOUBLE MONEY SMALLMONEY BOOLEAN TEXT VARCHAR "
        "CHAR NCHAR NVARCHAR NAME BPCHAR DATE DATE32 TIME TIMETZ TIMESTAMP TIMESTAMPTZ TIMESTAMPLTZ "
        "TIMESTAMP_S TIMESTAMP_MS DATETIME INTERVAL JSON JSONB UUID ARRAY INT4RANGE INT8RANGE NUMRANGE "
        "DATERANGE TSRANGE TSTZRANGE SERIAL BIGSERIAL UNKNOWN"
    ).split()
    if hasattr(_T, name)
)

# generate_series() may produce at most this many rows (a calendar of days over 270 years; an
# unbounded series is a memory and time bomb for the server).
MAX_SERIES_ROWS = 100_000
