import * as z from 'zod';

/** Payload schemas of the lending platform's job types. JSON in, JSON out: no transforms, so stored == validated. */

const isoDate = z
  .string()
  .regex(/^\d{4}-\d{2}-\d{2}$/, 'expected a date as YYYY-MM-DD')
  .refine(
    (s) =>
      !Number.isNaN(Date.parse(`${s}T00:00:00Z`)) && new Date(`${s}T00:00:00Z`).toISOString().startsWith(s),
    {
      message: 'not a calendar date',
    },
  );

export const approvalProcessingPayload = z.union([
  /** Carry out a process's recorded outcome. */
  z.strictObject({ processId: z.uuid() }),
  /** The scheduled sweep: expire every open process past its policy's time, releasing its reservation. */
  z.strictObject({ sweep: z.literal('expire') }),
]);

/** No facility predates this day; an earlier date (such as year 0000) is a typo, not a back-fill. */
export const EARLIEST_ACCRUAL_DATE = '2000-01-01';

export const interestAccrualPayload = z.strictObject({
  /**
   * Accrue up to and including this day (UTC); every earlier day not yet accrued is caught up too.
   * Omitted: up to the day that just ended. A day that has not ended yet is refused.
   */
  date: isoDate
    .refine((s) => s >= EARLIEST_ACCRUAL_DATE, {
      message: `no facility accrues before ${EARLIEST_ACCRUAL_DATE}`,
    })
    .refine((s) => s < new Date().toISOString().slice(0, 10), {
      message: 'that day has not ended yet (UTC): only past days accrue',
    })
    .optional(),
});

export const notificationPayload = z.discriminatedUnion('kind', [
  z.strictObject({
    kind: z.literal('payment-reminder'),
    facilityId: z.uuid(),
    dueDate: isoDate,
  }),
  z.strictObject({
    /** A collateralization transition: into margin call, to the liquidation level, or recovered. */
    kind: z.enum(['margin-call', 'liquidation-call', 'collateral-recovered']),
    facilityId: z.uuid(),
    /** The day of the transition (UTC). */
    valuationDate: isoDate,
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
  /** The day the sweep runs for (UTC); reminders go to payments due a few days later. Omitted: today. */
  date: isoDate.optional(),
});

export const maintenancePayload = z.strictObject({
  task: z.literal('prune').default('prune'),
});
