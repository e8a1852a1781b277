/**
 * Follow-up jobs (reminders, margin calls) are read and enqueued this many at a time: enqueue returns the
 * job rows, and a page must stay well under the RDS Data API's 1 MiB response limit.
 */
export const ENQUEUE_PAGE_SIZE = 500;

/** Below every uuid: where keyset paging by id starts. */
export const FIRST_PAGE_AFTER_ID = '00000000-0000-0000-0000-000000000000';

/**
 * Taken (transaction-scoped) by the statements that update every active facility, accrual and valuation.
 * Both run at midnight; two bulk UPDATEs over the same rows can lock them in different orders
 * (synchronised sequential scans, hash joins) and deadlock. Serialising them costs nothing noticeable.
 */
export const LOCK_FACILITY_BULK_UPDATES_SQL =
  "SELECT pg_advisory_xact_lock(hashtext('lana:credit_facilities:bulk'))";
