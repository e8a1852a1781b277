import { type Database, date } from '../../shared/db/port.js';
import {
  createCommittee,
  createJobServices,
  type Notifier,
  type PriceSource,
  setApprovalPolicy,
} from '../../shared/domain/index.js';
import { createJobTypeRegistry } from '../../shared/job-types/index.js';
import { JobDispatcher } from '../../shared/jobs/dispatcher.js';
import { JobTracker } from '../../shared/jobs/tracker.js';

/** A notifier that keeps what it was asked to send (a real implementation of the port, in memory). */
export function recordingNotifier() {
  const sent: { to: string; subject: string; body: string; idempotencyKey: string }[] = [];
  let failNext = 0;
  const notifier: Notifier = {
    async send(message) {
      if (failNext > 0) {
        failNext--;
        throw new Error('mail server unavailable');
      }
      sent.push(message);
      return { messageId: `m-${sent.length}` };
    },
  };
  const failNextSends = (n: number): void => {
    failNext = n;
  };
  return { notifier, sent, failNextSends };
}

/** A source quoting `cents`, priced at the moment it is asked. */
export function fixedPrice(cents: bigint): PriceSource {
  return { btcUsdQuote: async () => ({ cents, pricedAt: new Date() }) };
}

export function domainHarness(
  db: Database,
  options: { price?: PriceSource | readonly PriceSource[]; notifier?: Notifier } = {},
) {
  const registry = createJobTypeRegistry();
  const tracker = new JobTracker({ db, registry });
  const notifications = recordingNotifier();
  const services = createJobServices({
    db,
    tracker,
    notifier: options.notifier ?? notifications.notifier,
    priceSource: options.price ?? fixedPrice(10_000_000n),
  });
  const dispatcher = new JobDispatcher(registry, services);
  /** Claims and runs everything due (and what that enqueues), recording results like a worker. */
  async function drain(): Promise<void> {
    for (;;) {
      const claimed = await tracker.fetchReady(50, { startNow: true });
      if (claimed.length === 0) return;
      for (const job of claimed) {
        const result = await dispatcher.dispatch(job);
        if (result.outcome === 'completed') await tracker.markCompleted(job.id, job.attempts);
        else if (result.outcome === 'failed')
          await tracker.markFailed(job.id, job.attempts, result.error, { permanent: result.permanent });
        else await tracker.markFailed(job.id, job.attempts, result.reason, { retryAt: result.retryAt });
      }
    }
  }
  return { registry, tracker, services, dispatcher, notifications, drain };
}

export async function insertFacility(
  db: Database,
  f: {
    email?: string;
    status?: 'active' | 'closed';
    limitCents?: bigint;
    principalCents: bigint;
    rate: string;
    collateralSats?: bigint;
    nextPaymentDue?: string | null;
    createdAt?: string;
  },
): Promise<string> {
  const res = await db.query<{ id: string }>(
    `INSERT INTO credit_facilities (customer_email, status, facility_limit_cents, drawn_principal_cents, annual_rate,
                                    collateral_sats, next_payment_due, created_at)
     VALUES (:email, :status, :limit, :principal, CAST(:rate AS numeric), :sats, CAST(:due AS date),
             COALESCE(CAST(:created AS timestamptz), '2026-01-01T00:00:00Z'))
     RETURNING id`,
    {
      email: f.email ?? 'borrower@example.com',
      status: f.status ?? 'active',
      limit: f.limitCents ?? 1_000_000_000n,
      principal: f.principalCents,
      rate: f.rate,
      sats: f.collateralSats ?? 0n,
      due: f.nextPaymentDue ? date(f.nextPaymentDue) : null,
      created: f.createdAt ?? null,
    },
  );
  return res.rows[0]!.id;
}

/** A committee of `members` and the `disbursal` policy over it (every member approves unless a threshold). */
export async function disbursalPolicy(
  db: Database,
  members: readonly string[],
  threshold?: number,
): Promise<string> {
  const committeeId = await createCommittee(db, { name: `committee-${members.join('-')}`, members });
  await setApprovalPolicy(db, {
    processType: 'disbursal',
    committeeId,
    rule: threshold === undefined ? { kind: 'all-members' } : { kind: 'threshold', approvals: threshold },
  });
  return committeeId;
}

/**
 * Records an accepted BTC/USD price, as a valuation run would (the last accepted price is what disbursals
 * use), accepted `ageSeconds` ago and valid for 900 s (the default max valuation age) from then.
 */
export async function acceptedPrice(db: Database, cents: bigint, ageSeconds = 0): Promise<void> {
  await db.query(
    `INSERT INTO collateral_valuations (btc_usd_cents, facilities_valued, below_threshold, basis, valued_at, priced_at,
                                       valid_until)
     SELECT :cents, 0, 0, 'sources', at, at, at + interval '900 seconds'
     FROM (SELECT now() - make_interval(secs => :age) AS at) t`,
    { cents, age: ageSeconds },
  );
}

/** A price source whose quote (and its age) the test moves: a real implementation of the port, in memory. */
export function movablePrice(cents: bigint) {
  let current = cents;
  let ageSeconds = 0;
  const source: PriceSource = {
    btcUsdQuote: async () => ({ cents: current, pricedAt: new Date(Date.now() - ageSeconds * 1000) }),
  };
  return {
    source,
    set(next: bigint) {
      current = next;
    },
    /** Date the next quotes this many seconds ago (negative: in the future). */
    pricedSecondsAgo(seconds: number) {
      ageSeconds = seconds;
    },
  };
}
