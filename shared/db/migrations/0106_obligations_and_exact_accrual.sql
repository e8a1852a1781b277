-- Obligations, repayments and exact accrual (issue 26).

-- What a borrower owes: an accrual cycle's interest (posted when the cycle's last day has accrued) or the
-- drawn principal (due at maturity). Each carries its due, overdue and defaulted dates, fixed when it is
-- created. Outstanding = amount - paid; settled when nothing is outstanding.
CREATE TABLE obligations (
  id uuid PRIMARY KEY DEFAULT lana_uuid_v7(),
  facility_id uuid NOT NULL REFERENCES credit_facilities (id),
  kind text NOT NULL CHECK (kind IN ('interest', 'principal')),
  -- Interest: the cycle's first and last accrued day. Principal: NULL.
  period_start date,
  period_end date,
  amount_cents bigint NOT NULL CHECK (amount_cents > 0),
  paid_cents bigint NOT NULL DEFAULT 0 CHECK (paid_cents >= 0 AND paid_cents <= amount_cents),
  due_date date NOT NULL,
  overdue_date date NOT NULL,
  defaulted_date date NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  settled_at timestamptz,
  CHECK (due_date <= overdue_date AND overdue_date <= defaulted_date),
  CHECK ((kind = 'interest') = (period_end IS NOT NULL)),
  CHECK ((paid_cents = amount_cents) = (settled_at IS NOT NULL))
);

-- One interest obligation per facility and cycle.
CREATE UNIQUE INDEX obligations_interest_cycle_idx ON obligations (facility_id, period_end) WHERE kind = 'interest';
-- The unpaid ones, by due date: reminders, overdue notices, repayments and the next payment due.
CREATE INDEX obligations_unpaid_due_idx ON obligations (due_date, facility_id) WHERE settled_at IS NULL;
CREATE INDEX obligations_unpaid_facility_idx ON obligations (facility_id, due_date) WHERE settled_at IS NULL;

-- A repayment and how it was allocated, oldest obligation first. `reference` (optional, unique) makes a
-- retried repayment from the application harmless.
CREATE TABLE payments (
  id uuid PRIMARY KEY DEFAULT lana_uuid_v7(),
  facility_id uuid NOT NULL REFERENCES credit_facilities (id),
  amount_cents bigint NOT NULL CHECK (amount_cents > 0),
  reference text UNIQUE CHECK (length(reference) BETWEEN 1 AND 200),
  paid_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE payment_allocations (
  payment_id uuid NOT NULL REFERENCES payments (id),
  obligation_id uuid NOT NULL REFERENCES obligations (id),
  amount_cents bigint NOT NULL CHECK (amount_cents > 0),
  PRIMARY KEY (payment_id, obligation_id)
);

-- Every change of a facility's drawn principal that is not a disbursal (a repayment, a correction), with
-- its time: accrual rebuilds the principal at the end of a past day from disbursals and these, so a change
-- is never applied to days before it.
CREATE TABLE principal_changes (
  facility_id uuid NOT NULL REFERENCES credit_facilities (id),
  changed_at timestamptz NOT NULL DEFAULT now(),
  delta_cents bigint NOT NULL,
  id uuid PRIMARY KEY DEFAULT lana_uuid_v7()
);
CREATE INDEX principal_changes_facility_idx ON principal_changes (facility_id, changed_at);
CREATE INDEX principal_changes_changed_at_idx ON principal_changes (changed_at);

-- A disbursal moves a reserved amount into drawn principal (and is recorded in `disbursals`); any other
-- change of drawn principal is recorded here.
CREATE FUNCTION lana_record_principal_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.drawn_principal_cents - OLD.drawn_principal_cents > 0
     AND NEW.drawn_principal_cents - OLD.drawn_principal_cents = OLD.reserved_cents - NEW.reserved_cents THEN
    RETURN NULL;
  END IF;
  INSERT INTO principal_changes (facility_id, delta_cents)
  VALUES (NEW.id, NEW.drawn_principal_cents - OLD.drawn_principal_cents);
  RETURN NULL;
END $$;

CREATE TRIGGER credit_facilities_record_principal_change
  AFTER UPDATE OF drawn_principal_cents ON credit_facilities
  FOR EACH ROW WHEN (OLD.drawn_principal_cents IS DISTINCT FROM NEW.drawn_principal_cents)
  EXECUTE FUNCTION lana_record_principal_change();

-- Facilities:
-- - accrued_interest_basis: the sum of principal x annual rate over every day accrued since this release;
--   the exact interest accrued is basis / 365, and accrued_interest_cents follows its rounded running total
--   (the sub-cent remainder is carried, never lost or rounded up day after day);
-- - interest_posted_through: the last day of the last accrual cycle posted as an obligation;
-- - accrual_check_from: days from this one on may have gaps (a deleted accrual, an earlier opening day);
--   the next accrual fills them. Facilities that exist now get 2000-01-01 (their whole history is checked
--   once); new facilities NULL (the default is dropped, existing rows keep theirs without a rewrite).
ALTER TABLE credit_facilities
  ADD COLUMN accrued_interest_basis numeric NOT NULL DEFAULT 0 CHECK (accrued_interest_basis >= 0),
  ADD COLUMN interest_posted_through date,
  ADD COLUMN accrual_check_from date DEFAULT DATE '2000-01-01';
ALTER TABLE credit_facilities ALTER COLUMN accrual_check_from DROP DEFAULT;

-- A closed facility is not reopened (open a new one): its closing time bounds its accrual. A facility whose
-- opening day moves earlier has those days checked by the next accrual.
CREATE FUNCTION lana_guard_facility_history() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF OLD.status = 'closed' AND NEW.status <> 'closed' THEN
    RAISE EXCEPTION 'credit facility % is closed and cannot be reopened; open a new facility', OLD.id
      USING ERRCODE = 'check_violation';
  END IF;
  IF NEW.created_at < OLD.created_at THEN
    NEW.accrual_check_from := LEAST(COALESCE(NEW.accrual_check_from, 'infinity'),
                                    CAST(NEW.created_at AT TIME ZONE 'UTC' AS date));
  END IF;
  RETURN NEW;
END $$;

CREATE TRIGGER credit_facilities_guard_history BEFORE UPDATE OF status, created_at ON credit_facilities
  FOR EACH ROW EXECUTE FUNCTION lana_guard_facility_history();

-- A deleted accrual takes its cents and basis out of the balance, and its day is accrued again.
CREATE FUNCTION lana_accrual_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE credit_facilities
  SET accrued_interest_cents = accrued_interest_cents - OLD.interest_cents,
      accrued_interest_basis = GREATEST(accrued_interest_basis - OLD.principal_cents * OLD.annual_rate, 0),
      accrual_check_from = LEAST(COALESCE(accrual_check_from, OLD.accrual_date), OLD.accrual_date)
  WHERE id = OLD.facility_id;
  RETURN NULL;
END $$;

CREATE TRIGGER interest_accruals_deleted AFTER DELETE ON interest_accruals
  FOR EACH ROW EXECUTE FUNCTION lana_accrual_deleted();

-- Notices for an obligation that went overdue.
ALTER TABLE notifications
  DROP CONSTRAINT notifications_kind_check,
  ADD CONSTRAINT notifications_kind_check
    CHECK (kind IN ('payment-reminder', 'obligation-overdue', 'margin-call', 'liquidation-call',
                    'collateral-recovered'));
