-- Who marked the current attempt begun, for executors that start attempts themselves (AWS): a token the
-- start statement makes per call. The Data API's client sends a statement again when its answer is lost,
-- even after it committed; the resent start finds its own token and answers with the job, where it would
-- otherwise find the attempt begun and take itself for a duplicate delivery, and the attempt would be lost
-- until its lease expired. Adding a nullable column without a default rewrites nothing.
ALTER TABLE jobs ADD COLUMN start_token uuid;
