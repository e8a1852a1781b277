import { LendingInputError } from '../domain/errors.js';
import { formatCents } from '../domain/money.js';
import { type RepaymentResult, recordRepayment } from '../domain/obligations.js';
import type { OpenedDatabase } from '../runtime/database.js';
import { type OptionSpec, type Parsed, requirePositional, stringOption, UsageError } from './args.js';
import { toJson } from './format.js';
import type { CliIo } from './io.js';

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** `lana-jobs repay <facility-id> --amount 500.00 [--reference REF]`: a repayment from the command line. */
export const repayCommand = {
  help: `lana-jobs repay <facility-id> --amount AMOUNT [--reference REF]: record a repayment; it settles
the facility's unpaid obligations oldest first (by due date, interest before principal).
  --amount AMOUNT     US dollars, e.g. 500 or 500.25 (positive, at most two decimals, at most what is owed)
  --reference REF     the payment's own reference: repeating a repayment with it writes nothing`,
  options: { amount: { type: 'string' }, reference: { type: 'string' } } satisfies OptionSpec,
  positionals: 1,
  needsDatabase: true,
  async run(ctx: { args: Parsed; io: CliIo; json: boolean; opened: OpenedDatabase | null }): Promise<number> {
    const facilityId = requirePositional(ctx.args, 0, 'facility-id');
    if (!UUID_RE.test(facilityId)) throw new UsageError(`"${facilityId}" is not a facility id (a UUID)`);
    const amountText = stringOption(ctx.args, 'amount');
    if (amountText === undefined) throw new UsageError('--amount is required (US dollars, e.g. 500.00)');
    const amountCents = parseAmount(amountText);
    let result: RepaymentResult;
    try {
      result = await recordRepayment(ctx.opened!.db, {
        facilityId,
        amountCents,
        reference: stringOption(ctx.args, 'reference'),
      });
    } catch (err) {
      // Refused by the domain: bad input, nothing written.
      if (err instanceof LendingInputError) throw new UsageError(err.message);
      throw err;
    }
    ctx.io.stdout.write(`${ctx.json ? toJson(result) : describe(result)}\n`);
    return 0;
  },
};

/** "500", "500.5", "500.25" → cents; anything else (a sign, three decimals, a comma) is refused. */
function parseAmount(text: string): bigint {
  const m = /^(\d{1,13})(?:\.(\d{1,2}))?$/.exec(text.trim());
  if (!m) {
    throw new UsageError(
      `--amount must be US dollars with at most two decimals, e.g. 500.25 (got "${text}")`,
    );
  }
  const cents = BigInt(m[1]!) * 100n + BigInt((m[2] ?? '').padEnd(2, '0'));
  if (cents === 0n) throw new UsageError('--amount must be more than 0');
  return cents;
}

function describe(r: RepaymentResult): string {
  const head = r.recorded
    ? `paid USD ${formatCents(r.amountCents)} on facility ${r.facilityId} (payment ${r.paymentId})`
    : `already recorded with this reference: payment ${r.paymentId}; nothing written`;
  return [
    head,
    ...r.allocations.map((a) => `  ${a.kind} due ${a.dueDate}: USD ${formatCents(a.amountCents)}`),
    `still owed on obligations: USD ${formatCents(r.outstandingCents)}; next payment due: ${r.nextPaymentDue ?? 'none'}`,
  ].join('\n');
}
