-- Interest accrual reconstructs a facility's principal at the end of a past day from the disbursals
-- executed after it: find those by time without reading the whole disbursal history.
CREATE INDEX disbursals_executed_at_idx ON disbursals (executed_at);
