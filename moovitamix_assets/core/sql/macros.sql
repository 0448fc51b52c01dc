-- Validation rules shared by the core tables. Each *_problem macro returns why one field
-- of a received record cannot be used (a reason code), or NULL when it can.
-- Reason codes: missing_field:<f>, null_field:<f>, invalid_type:<f>, invalid_id:<f>,
-- unparseable_timestamp:<f>, invalid_duration:<f>; duplicate_id is given in dedupe.sql.

CREATE OR REPLACE TEMP MACRO missing_or_null(record, field) AS
    CASE
        WHEN json_extract(record, field) IS NULL THEN 'missing_field:' || field
        WHEN json_type(json_extract(record, field)) = 'NULL' THEN 'null_field:' || field
    END;

CREATE OR REPLACE TEMP MACRO text_problem(record, field) AS
    coalesce(
        missing_or_null(record, field),
        CASE WHEN json_type(json_extract(record, field)) <> 'VARCHAR' THEN 'invalid_type:' || field END
    );

-- Ids are positive JSON integers that fit a BIGINT (a float, a string or 0 is refused).
CREATE OR REPLACE TEMP MACRO id_problem(record, field) AS
    coalesce(
        missing_or_null(record, field),
        CASE
            WHEN json_type(json_extract(record, field)) NOT IN ('BIGINT', 'UBIGINT')
                OR TRY_CAST(json_extract_string(record, field) AS BIGINT) IS NULL
                THEN 'invalid_type:' || field
            WHEN TRY_CAST(json_extract_string(record, field) AS BIGINT) <= 0
                THEN 'invalid_id:' || field
        END
    );

-- The common case is decided on the list's text alone (json_extract gives it minified):
-- positive integers of at most 18 digits, which fit a BIGINT. Anything else (a string, a
-- float, a sign, an exponent, a null) takes the item-by-item path, which names the problem.
CREATE OR REPLACE TEMP MACRO id_list_problem(record, field) AS
    CASE
        WHEN regexp_full_match(json_extract(record, field)::VARCHAR, '\[([1-9][0-9]{0,17}(,[1-9][0-9]{0,17})*)?\]')
            THEN NULL
        ELSE coalesce(
            missing_or_null(record, field),
            CASE
                WHEN json_type(json_extract(record, field)) <> 'ARRAY' THEN 'invalid_type:' || field
                WHEN NOT coalesce(list_bool_and(list_transform(
                        CAST(json_extract(record, field) AS JSON[]),
                        lambda item: json_type(item) IN ('BIGINT', 'UBIGINT')
                            AND TRY_CAST(item::VARCHAR AS BIGINT) > 0
                    )), true)
                    THEN 'invalid_type:' || field
            END
        )
    END;

-- Timestamps are UTC. A text with an offset (+02:00, Z) is converted to UTC, not truncated;
-- one without is taken as UTC: it is parsed as TIMESTAMPTZ in the session's zone, which every
-- warehouse connection sets to UTC (warehouse.in_utc), and read back as UTC wall time.
CREATE OR REPLACE TEMP MACRO as_timestamp(record, field) AS
    timezone('UTC', TRY_CAST(json_extract_string(record, field) AS TIMESTAMPTZ));

CREATE OR REPLACE TEMP MACRO timestamp_problem(record, field) AS
    coalesce(
        text_problem(record, field),
        CASE WHEN as_timestamp(record, field) IS NULL THEN 'unparseable_timestamp:' || field END
    );

-- "MM:SS" (minutes may exceed 59, seconds may not) to seconds; NULL when malformed.
CREATE OR REPLACE TEMP MACRO duration_seconds(duration) AS
    TRY_CAST(regexp_extract(duration, '^(\d{1,6}):[0-5]\d$', 1) AS INTEGER) * 60
    + TRY_CAST(regexp_extract(duration, '^\d{1,6}:([0-5]\d)$', 1) AS INTEGER);

CREATE OR REPLACE TEMP MACRO duration_problem(record, field) AS
    coalesce(
        text_problem(record, field),
        CASE WHEN duration_seconds(json_extract_string(record, field)) IS NULL
            THEN 'invalid_duration:' || field END
    );

-- All of a record's problems as one reason, or NULL when it has none.
CREATE OR REPLACE TEMP MACRO reasons(problems) AS
    nullif(array_to_string(list_filter(problems, lambda p: p IS NOT NULL), '; '), '');
