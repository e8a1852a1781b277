-- Collateralization state (issue 17): stored per facility and changed only on a transition; each
-- transition is recorded (and notified); each valuation run records the portfolio.
ALTER TABLE credit_facilities
  ADD COLUMN collateralization_state text NOT NULL DEFAULT 'no-exposure'
    CHECK (collateralization_state IN
      ('fully-collateralized', 'under-margin-call', 'under-liquidation', 'no-collateral', 'no-exposure'));

-- One row per facility whose state a valuation changed.
CREATE TABLE collateral_transitions (
  valuation_id uuid NOT NULL,
  facility_id uuid NOT NULL REFERENCES credit_facilities (id),
  from_state text NOT NULL,
  to_state text NOT NULL,
  -- Collateral value / total outstanding at the transition (NULL with nothing outstanding).
  cover numeric,
  at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (valuation_id, facility_id)
);

-- The portfolio at each run: totals, cover weighted by outstanding (total value / total outstanding),
-- facilities per state and how many rows the run changed.
ALTER TABLE collateral_valuations
  ADD COLUMN total_collateral_cents bigint,
  ADD COLUMN total_outstanding_cents bigint,
  ADD COLUMN weighted_cover numeric,
  ADD COLUMN facilities_changed integer,
  ADD COLUMN fully_collateralized integer,
  ADD COLUMN under_margin_call integer,
  ADD COLUMN under_liquidation integer,
  ADD COLUMN no_collateral integer,
  ADD COLUMN no_exposure integer;

ALTER TABLE notifications
  DROP CONSTRAINT notifications_kind_check,
  ADD CONSTRAINT notifications_kind_check
    CHECK (kind IN ('payment-reminder', 'margin-call', 'liquidation-call', 'collateral-recovered'));
