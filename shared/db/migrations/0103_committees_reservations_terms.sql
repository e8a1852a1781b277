-- Governance and facility terms (issue 17).
-- Committees and their members; a policy per process type names the committee and the approval rule.
-- A process snapshots its committee and the approvals it needs when it opens, so a later policy change
-- never changes the rule of a process already under vote.
CREATE TABLE committees (
  id uuid PRIMARY KEY DEFAULT lana_uuid_v7(),
  name text NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 200),
  created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE committee_members (
  committee_id uuid NOT NULL REFERENCES committees (id),
  member text NOT NULL CHECK (length(member) BETWEEN 1 AND 200),
  PRIMARY KEY (committee_id, member)
);

-- rule: 'all-members' (every member approves), 'threshold' (that many members approve) or 'auto-approve'
-- (the system approves when the process opens; no committee). Any member's denial denies.
CREATE TABLE approval_policies (
  process_type text PRIMARY KEY CHECK (length(process_type) BETWEEN 1 AND 100),
  committee_id uuid REFERENCES committees (id),
  rule text NOT NULL CHECK (rule IN ('all-members', 'threshold', 'auto-approve')),
  threshold integer CHECK (threshold >= 1),
  CHECK ((rule = 'auto-approve') = (committee_id IS NULL)),
  CHECK ((rule = 'threshold') = (threshold IS NOT NULL))
);

-- Processes: the committee they are voted by, why they were denied or failed, and a 'failed' outcome
-- (approved, but the disbursal was refused). An auto-approved process has a committee of 0.
ALTER TABLE approval_processes
  ADD COLUMN process_type text NOT NULL DEFAULT 'disbursal',
  ADD COLUMN committee_id uuid REFERENCES committees (id),
  ADD COLUMN denial_reason text,
  ADD COLUMN failure_reason text,
  DROP CONSTRAINT approval_processes_committee_size_check,
  DROP CONSTRAINT approval_processes_check,
  DROP CONSTRAINT approval_processes_status_check,
  ADD CONSTRAINT approval_processes_committee_size_check CHECK (committee_size >= 0),
  ADD CONSTRAINT approval_processes_required_approvals_check
    CHECK (required_approvals BETWEEN 0 AND committee_size),
  ADD CONSTRAINT approval_processes_status_check
    CHECK (status IN ('pending', 'approved', 'denied', 'failed'));

-- A denial carries its reason.
ALTER TABLE approval_votes
  ADD COLUMN reason text,
  ADD CONSTRAINT approval_votes_denial_reason_check
    CHECK (approve OR length(btrim(reason)) BETWEEN 1 AND 1000);

-- Facilities: the amount reserved by open and approved-but-not-yet-disbursed processes (never above the
-- limit together with what is drawn), the three collateralization levels (initial > margin call >
-- liquidation, as ratios of collateral value to total outstanding), the maturity date (no disbursal and
-- no accrual from that day on) and when the facility was closed (it still accrues the days it was open).
ALTER TABLE credit_facilities
  ADD COLUMN reserved_cents bigint NOT NULL DEFAULT 0 CHECK (reserved_cents >= 0),
  ADD COLUMN initial_cvl numeric(8, 4) NOT NULL DEFAULT 1.40,
  ADD COLUMN margin_call_cvl numeric(8, 4) NOT NULL DEFAULT 1.25,
  ADD COLUMN liquidation_cvl numeric(8, 4) NOT NULL DEFAULT 1.05,
  ADD COLUMN maturity_date date,
  ADD COLUMN closed_at timestamptz,
  ADD CONSTRAINT credit_facilities_reserved_within_limit_check
    CHECK (drawn_principal_cents + reserved_cents <= facility_limit_cents),
  ADD CONSTRAINT credit_facilities_cvl_levels_check
    CHECK (initial_cvl > margin_call_cvl AND margin_call_cvl > liquidation_cvl AND liquidation_cvl > 0);

-- Closing stamps the time, so accrual knows which days the facility was still open (a facility recorded
-- as closed from the start was never open).
CREATE FUNCTION lana_stamp_facility_closed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.status = 'closed' AND NEW.closed_at IS NULL THEN
    NEW.closed_at := CASE WHEN TG_OP = 'INSERT' THEN NEW.created_at ELSE now() END;
  END IF;
  RETURN NEW;
END $$;

CREATE TRIGGER credit_facilities_stamp_closed BEFORE INSERT OR UPDATE OF status ON credit_facilities
  FOR EACH ROW EXECUTE FUNCTION lana_stamp_facility_closed();

-- Accrual reconstructs a facility's principal at the end of each past day from its later disbursals.
CREATE INDEX disbursals_facility_executed_at_idx ON disbursals (facility_id, executed_at);
