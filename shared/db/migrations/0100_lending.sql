-- The lending domain behind the seed's job types: credit facilities, daily interest accrual, approval
-- processes with committee votes and the disbursals they execute, collateral valuation, and the
-- notifications outbox. Money is integer cents; rates are exact numerics; dates are UTC calendar days.

CREATE TABLE credit_facilities (
  id uuid PRIMARY KEY DEFAULT lana_uuid_v7(),
  customer_email text NOT NULL CHECK (position('@' IN customer_email) > 1),
  status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'closed')),
  facility_limit_cents bigint NOT NULL CHECK (facility_limit_cents >= 0),
  drawn_principal_cents bigint NOT NULL DEFAULT 0 CHECK (drawn_principal_cents >= 0),
  -- Annual interest rate as a fraction: 0.125000 is 12.5 %.
  annual_rate numeric(9, 6) NOT NULL CHECK (annual_rate >= 0 AND annual_rate < 10),
  accrued_interest_cents bigint NOT NULL DEFAULT 0 CHECK (accrued_interest_cents >= 0),
  next_payment_due date,
  collateral_sats bigint NOT NULL DEFAULT 0 CHECK (collateral_sats >= 0),
  collateral_value_cents bigint,
  -- Collateral value / drawn principal (NULL while nothing is drawn).
  collateral_to_loan_ratio numeric(14, 4),
  valued_at timestamptz,
  created_at timestamptz NOT NULL DEFAULT now(),
  CHECK (drawn_principal_cents <= facility_limit_cents)
);

CREATE INDEX credit_facilities_active_idx ON credit_facilities (id) WHERE status = 'active';
CREATE INDEX credit_facilities_payment_due_idx ON credit_facilities (next_payment_due) WHERE status = 'active';

-- One row per facility per day: the unique key is what makes accrual idempotent.
CREATE TABLE interest_accruals (
  facility_id uuid NOT NULL REFERENCES credit_facilities (id),
  accrual_date date NOT NULL,
  principal_cents bigint NOT NULL,
  annual_rate numeric(9, 6) NOT NULL,
  interest_cents bigint NOT NULL CHECK (interest_cents >= 0),
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (facility_id, accrual_date)
);

-- A disbursal needs `required_approvals` approving votes from a committee of `committee_size`.
CREATE TABLE approval_processes (
  id uuid PRIMARY KEY DEFAULT lana_uuid_v7(),
  facility_id uuid NOT NULL REFERENCES credit_facilities (id),
  amount_cents bigint NOT NULL CHECK (amount_cents > 0),
  committee_size integer NOT NULL CHECK (committee_size >= 1),
  required_approvals integer NOT NULL CHECK (required_approvals BETWEEN 1 AND committee_size),
  status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'approved', 'denied')),
  concluded_at timestamptz,
  created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE approval_votes (
  process_id uuid NOT NULL REFERENCES approval_processes (id),
  voter text NOT NULL CHECK (length(voter) BETWEEN 1 AND 200),
  approve boolean NOT NULL,
  cast_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (process_id, voter)
);

-- At most one disbursal per approved process.
CREATE TABLE disbursals (
  process_id uuid PRIMARY KEY REFERENCES approval_processes (id),
  facility_id uuid NOT NULL REFERENCES credit_facilities (id),
  amount_cents bigint NOT NULL CHECK (amount_cents > 0),
  executed_at timestamptz NOT NULL DEFAULT now()
);

-- Each revaluation run: the price used and how many facilities it touched.
CREATE TABLE collateral_valuations (
  id uuid PRIMARY KEY DEFAULT lana_uuid_v7(),
  btc_usd_cents bigint NOT NULL CHECK (btc_usd_cents > 0),
  facilities_valued integer NOT NULL,
  below_threshold integer NOT NULL,
  valued_at timestamptz NOT NULL DEFAULT now()
);

-- The notifications outbox: recorded before delivery, unique per facility, kind and day, so a retried
-- or duplicated job never sends the same notice twice.
CREATE TABLE notifications (
  id uuid PRIMARY KEY DEFAULT lana_uuid_v7(),
  facility_id uuid NOT NULL REFERENCES credit_facilities (id),
  kind text NOT NULL CHECK (kind IN ('payment-reminder', 'margin-call')),
  key_date date NOT NULL,
  recipient text NOT NULL,
  subject text NOT NULL,
  body text NOT NULL,
  status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent')),
  provider_message_id text,
  created_at timestamptz NOT NULL DEFAULT now(),
  sent_at timestamptz,
  UNIQUE (facility_id, kind, key_date)
);
