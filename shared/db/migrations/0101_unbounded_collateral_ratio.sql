-- The collateral-to-loan ratio was numeric(14, 4): a large collateral against a tiny drawn amount (1,000 BTC
-- against one cent) overflowed it, and one such facility would fail every portfolio valuation. The SQL
-- rounds the ratio to 4 places; the column no longer limits its size.
ALTER TABLE credit_facilities ALTER COLUMN collateral_to_loan_ratio TYPE numeric;
