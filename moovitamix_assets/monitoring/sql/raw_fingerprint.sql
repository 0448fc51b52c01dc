-- Row count and an order-independent checksum of one raw partition's content, computed
-- the same way on the DuckDB table and on its Parquet copy so that the two can be compared.
SELECT count(*), coalesce(sum(hash(page, position_in_page, record::VARCHAR)), 0)
FROM {source};
