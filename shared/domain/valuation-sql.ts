import { ENQUEUE_PAGE_SIZE } from './bulk.js';

/** The statements of one valuation batch (`portfolio.ts`): the facilities valued, then their notices. */

/**
 * One batch (facility ids in (:after, :upto]): values the collateral at the price (sats × price / 10^8,
 * rounded DOWN to the cent, in the lender's favour), the cover on TOTAL outstanding (drawn principal plus
 * accrued interest not yet paid), and the collateralization state against the facility's own levels;
 * moving back UP a state needs the cover to clear that level plus the buffer. Only rows whose value, cover
 * or state changed are written, and each state change is recorded as a transition of this run with the
 * figures its notice states (price, value, principal, interest, levels) as they are now.
 */
export const VALUE_BATCH_SQL = `
WITH priced AS (
  SELECT f.id, f.collateralization_state AS old_state, f.collateral_value_cents AS old_value,
         f.collateral_to_loan_ratio AS old_ratio, f.collateral_sats, f.margin_call_cvl, f.liquidation_cvl,
         f.drawn_principal_cents AS principal, f.accrued_interest_cents AS interest,
         div(f.collateral_sats::numeric * :price, 100000000)::bigint AS value,
         f.drawn_principal_cents + f.accrued_interest_cents AS outstanding
  FROM credit_facilities f
  WHERE f.status = 'active' AND f.id > CAST(:after AS uuid) AND f.id <= CAST(:upto AS uuid)
), ranked AS (
  SELECT p.*,
         CASE WHEN p.outstanding > 0 THEN round(p.value::numeric / p.outstanding, 4) END AS ratio,
         CASE WHEN p.value < p.liquidation_cvl * p.outstanding THEN 0
              WHEN p.value < p.margin_call_cvl * p.outstanding THEN 1 ELSE 2 END AS raw_rank,
         CASE WHEN p.value < (p.liquidation_cvl + CAST(:buffer AS numeric)) * p.outstanding THEN 0
              WHEN p.value < (p.margin_call_cvl + CAST(:buffer AS numeric)) * p.outstanding THEN 1 ELSE 2 END AS buffered_rank,
         CASE p.old_state WHEN 'under-liquidation' THEN 0 WHEN 'under-margin-call' THEN 1
                          WHEN 'fully-collateralized' THEN 2 END AS old_rank
  FROM priced p
), judged AS (
  SELECT r.*,
         CASE WHEN r.outstanding = 0 THEN 'no-exposure'
              WHEN r.collateral_sats = 0 THEN 'no-collateral'
              ELSE (ARRAY['under-liquidation', 'under-margin-call', 'fully-collateralized'])[1 +
                CASE WHEN r.old_rank IS NULL OR r.raw_rank <= r.old_rank THEN r.raw_rank
                     ELSE GREATEST(r.old_rank, r.buffered_rank) END]
         END AS new_state
  FROM ranked r
), changed AS (
  UPDATE credit_facilities f
  SET collateral_value_cents = j.value, collateral_to_loan_ratio = j.ratio,
      collateralization_state = j.new_state, valued_at = now()
  FROM judged j
  WHERE f.id = j.id AND (j.value IS DISTINCT FROM j.old_value OR j.ratio IS DISTINCT FROM j.old_ratio
                         OR j.new_state <> j.old_state)
  RETURNING f.id
), transitions AS (
  INSERT INTO collateral_transitions (valuation_id, facility_id, from_state, to_state, cover, btc_usd_cents,
                                      collateral_sats, collateral_value_cents, principal_cents, interest_cents,
                                      margin_call_cvl, liquidation_cvl)
  SELECT CAST(:run AS uuid), j.id, j.old_state, j.new_state, j.ratio, :price, j.collateral_sats, j.value,
         j.principal, j.interest, j.margin_call_cvl, j.liquidation_cvl
  FROM judged j WHERE j.new_state <> j.old_state
  RETURNING facility_id
)
SELECT (SELECT count(*) FROM judged)::integer AS valued, (SELECT count(*) FROM changed)::integer AS changed,
       (SELECT count(*) FROM transitions)::integer AS transitions`;

/**
 * The notice a transition deserves: into margin call (from above; the way up from the liquidation level
 * is no margin call), to the liquidation level, or recovered. One per transition, keyed by it.
 */
export const NOTICES_PAGE_SQL = `
SELECT id, facility_id, kind, CAST(CAST(at AT TIME ZONE 'UTC' AS date) AS text) AS valuation_date FROM (
  SELECT t.id, t.facility_id, t.at,
         CASE WHEN t.to_state = 'under-liquidation' THEN 'liquidation-call'
              WHEN t.to_state = 'under-margin-call' AND t.from_state <> 'under-liquidation' THEN 'margin-call'
              WHEN t.to_state = 'fully-collateralized'
                   AND t.from_state IN ('under-margin-call', 'under-liquidation') THEN 'collateral-recovered'
         END AS kind
  FROM collateral_transitions t
  WHERE t.valuation_id = CAST(:run AS uuid) AND t.facility_id > CAST(:after AS uuid)
    AND t.facility_id <= CAST(:upto AS uuid)
) n WHERE kind IS NOT NULL ORDER BY facility_id LIMIT ${ENQUEUE_PAGE_SIZE}`;
