import * as z from 'zod';

/** Payload schemas of the lending platform's job types. JSON in, JSON out: no transforms, so stored == validated. */

/** No facility predates this day; an earlier date (such as year 0000) is a typo, not a back-fill. */
export const EARLIEST_BUSINESS_DATE = '2000-01-01';
/**
 * The horizon of business dates: a later one (such as year 9999) is a typo, and would only fail at run
 * time, attempt after attempt.
 */
export const LATEST_BUSINESS_DATE = '2099-12-31';
export const BUSINESS_DATE_HINT = `a date, YYYY-MM-DD, from ${EARLIEST_BUSINESS_DATE} to ${LATEST_BUSINESS_DATE}`;

/** A day of the lending business (UTC), in every payload that takes one: a real calendar day, bounded. */
export const businessDate = z
  .string()
  .regex(/^\d{4}-\d{2}-\d{2}$/, 'expected a date as YYYY-MM-DD')
  .refine(
    (s) =>
      !Number.isNaN(Date.parse(`${s}T00:00:00Z`)) && new Date(`${s}T00:00:00Z`).toISOString().startsWith(s),
    { message: 'not a calendar date', abort: true },
  )
  .refine((s) => s >= EARLIEST_BUSINESS_DATE && s <= LATEST_BUSINESS_DATE, {
    message: `must be from ${EARLIEST_BUSINESS_DATE} to ${LATEST_BUSINESS_DATE}`,
  })
  .describe(BUSINESS_DATE_HINT);

export const approvalProcessingPayload = z
  .strictObject({
    /** Carry out this process's recorded outcome. */
    processId: z.uuid().describe('a UUID, e.g. 0193a1b2-0000-7000-8000-000000000001').optional(),
    /**
     * The process's facility: the job's concurrency key (one job per facility at a time). The domain fills
     * it in; absent (a job enqueued by hand, or before the key existed), the job runs without a key.
     */
    facilityId: z.uuid().describe("a UUID: the process's credit facility").optional(),
    /** The scheduled sweep: expire every open process past its policy's time, releasing its reservation. */
    sweep: z.literal('expire').optional(),
  })
  // One object with one of two fields (not a union): its errors name the field, and forms can show it.
  .refine((p) => (p.processId === undefined) !== (p.sweep === undefined), {
    message: 'give processId (a UUID), or sweep "expire" for the scheduled sweep, not both',
    path: ['processId'],
  })
  .refine((p) => p.facilityId === undefined || p.processId !== undefined, {
    message: 'facilityId goes with processId (the sweep covers every facility)',
    path: ['facilityId'],
  });

export const interestAccrualPayload = z.strictObject({
  /**
   * Accrue up to and including this day (UTC); every earlier day not yet accrued is caught up too.
   * Omitted: up to the day that just ended. A day that has not ended yet is refused.
   */
  date: businessDate
    .refine((s) => s < new Date().toISOString().slice(0, 10), {
      message: 'that day has not ended yet (UTC): only past days accrue',
    })
    .describe(`${BUSINESS_DATE_HINT}, a day that has ended`)
    .optional(),
});

export const notificationPayload = z.discriminatedUnion('kind', [
  z.strictObject({
    kind: z.literal('payment-reminder'),
    facilityId: z.uuid(),
    dueDate: businessDate,
  }),
  z.strictObject({
    /** What was due on `dueDate` is unpaid and overdue. */
    kind: z.literal('obligation-overdue'),
    facilityId: z.uuid(),
    dueDate: businessDate,
  }),
  z.strictObject({
    /** A collateralization transition: into margin call, to the liquidation level, or recovered. */
    kind: z.enum(['margin-call', 'liquidation-call', 'collateral-recovered']),
    facilityId: z.uuid(),
    /** The day of the transition (UTC). */
    valuationDate: businessDate,
    /**
     * The transition the notice is about: one notice per transition, its text from the figures stored
     * with it. Absent only in jobs queued before transitions had ids (their notice is the facility's
     * last transition of that kind on that day).
     */
    transitionId: z.uuid().optional(),
  }),
]);
export type NotificationPayload = z.output<typeof notificationPayload>;

export const syncPayload = z.strictObject({
  target: z.literal('portfolio-valuation').default('portfolio-valuation'),
  /** Value at this price accepted by hand (`lana-jobs accept-price`) instead of asking the sources. */
  manualPriceId: z.uuid().optional(),
});

export const paymentRemindersPayload = z.strictObject({
  /**
   * The day the sweep runs for (UTC); reminders go to obligations due from it to a few days later.
   * Omitted: today. A day that has not begun is refused: its reminders would go out early.
   */
  date: businessDate
    .refine((s) => s <= new Date().toISOString().slice(0, 10), {
      message: 'that day has not begun yet (UTC): a sweep runs on its day or later, never ahead',
    })
    .optional(),
});

export const maintenancePayload = z.strictObject({
  task: z.literal('prune').default('prune'),
});
