-- Issue 26: a price the lender can trust, one notice per collateralization transition, and approval
-- processes that can be withdrawn or expire.

-- Every valuation run's look at the sources, accepted or refused: what each source answered and what was
-- decided. A refused run writes this row and nothing else; a move beyond the jump guard is only accepted
-- after several consecutive runs in which a majority of the sources agreed on it (`majority_agrees`),
-- and these rows are how the next run knows. The id is chosen by the caller, so a statement the Data API
-- sends twice records one observation, not two.
CREATE TABLE price_observations (
  id uuid PRIMARY KEY,
  observed_at timestamptz NOT NULL DEFAULT now(),
  sources_configured integer NOT NULL CHECK (sources_configured >= 1),
  -- [{ "source": 1, "cents": "9712345", "pricedAt": "..." } | { "source": 2, "error": "..." }]
  quotes jsonb NOT NULL,
  -- The median of the agreeing majority when there is one, else of all fresh answers (NULL: none answered).
  median_cents bigint,
  -- A strict majority of the configured sources answered and agreed with each other (all of them, with one
  -- or two configured): a run that counts towards confirming a move beyond the jump guard.
  majority_agrees boolean NOT NULL,
  outcome text NOT NULL CHECK (outcome IN ('accepted', 'refused')),
  reason text
);
CREATE INDEX price_observations_observed_at_idx ON price_observations (observed_at DESC, id DESC);

-- A price accepted by an operator, with who, when and why. The valuation it triggers records its id.
CREATE TABLE manual_prices (
  id uuid PRIMARY KEY,
  btc_usd_cents bigint NOT NULL CHECK (btc_usd_cents > 0),
  accepted_by text NOT NULL CHECK (length(btrim(accepted_by)) BETWEEN 1 AND 200),
  reason text NOT NULL CHECK (length(btrim(reason)) BETWEEN 1 AND 1000),
  accepted_at timestamptz NOT NULL DEFAULT now()
);

-- How each accepted price was reached, when it was priced (its oldest quote, or the operator's acceptance)
-- and until when it may back a disbursal. Rows from before this migration have no validity: the disbursal
-- gate treats them as stale.
ALTER TABLE collateral_valuations
  ADD COLUMN basis text CHECK (basis IN ('sources', 'sustained-move', 'manual')),
  ADD COLUMN priced_at timestamptz,
  ADD COLUMN valid_until timestamptz,
  ADD COLUMN manual_price_id uuid UNIQUE REFERENCES manual_prices (id);
CREATE INDEX collateral_valuations_newest_idx ON collateral_valuations (valued_at DESC, id DESC);

-- Each transition carries its own id and the figures its notice states, as they were at the transition:
-- a notice delivered later (after a recovery, say) still tells what happened then.
ALTER TABLE collateral_transitions
  ADD COLUMN id uuid NOT NULL DEFAULT lana_uuid_v7(),
  ADD COLUMN btc_usd_cents bigint,
  ADD COLUMN collateral_sats bigint,
  ADD COLUMN collateral_value_cents bigint,
  ADD COLUMN principal_cents bigint,
  ADD COLUMN interest_cents bigint,
  ADD COLUMN margin_call_cvl numeric,
  ADD COLUMN liquidation_cvl numeric,
  ADD CONSTRAINT collateral_transitions_id_key UNIQUE (id);

-- A transition's notice is keyed by its transition (two margin calls on one day are two notices); other
-- notices (payment reminders) stay unique per facility, kind and day.
ALTER TABLE notifications
  ADD COLUMN transition_id uuid REFERENCES collateral_transitions (id),
  DROP CONSTRAINT IF EXISTS notifications_facility_id_kind_key_date_key;
CREATE UNIQUE INDEX notifications_day_key ON notifications (facility_id, kind, key_date)
  WHERE transition_id IS NULL;
CREATE UNIQUE INDEX notifications_transition_key ON notifications (transition_id)
  WHERE transition_id IS NOT NULL;

-- Approval processes: who opened one (only they may withdraw it) and when it expires (the policy's time
-- after opening); a withdrawn or expired process releases its reservation.
ALTER TABLE approval_policies
  ADD COLUMN expires_after_seconds integer NOT NULL DEFAULT 604800
    CHECK (expires_after_seconds BETWEEN 60 AND 31536000);
ALTER TABLE approval_processes
  ADD COLUMN initiated_by text CHECK (length(btrim(initiated_by)) BETWEEN 1 AND 200),
  ADD COLUMN expires_at timestamptz,
  ADD COLUMN withdrawal_reason text,
  DROP CONSTRAINT approval_processes_status_check,
  ADD CONSTRAINT approval_processes_status_check
    CHECK (status IN ('pending', 'approved', 'denied', 'failed', 'withdrawn', 'expired'));
-- Processes open before this migration expire a week after they opened, the policies' default.
UPDATE approval_processes SET expires_at = created_at + interval '7 days' WHERE status = 'pending';
CREATE INDEX approval_processes_pending_expiry_idx ON approval_processes (expires_at) WHERE status = 'pending';
