/**
 * A lending operation refused because of its input (a vote from a non-member, a second vote, a vote on a
 * concluded process, a process over the facility's limit, ...). Nothing was written. The code is
 * machine-readable, the message says why.
 */
export class LendingInputError extends Error {
  override readonly name = 'LendingInputError';
  constructor(
    readonly code:
      | 'approval_process_not_found'
      | 'approval_process_concluded'
      | 'already_voted'
      | 'not_a_member'
      | 'reason_required'
      | 'invalid_committee'
      | 'invalid_policy'
      | 'invalid_amount'
      | 'no_policy'
      | 'facility_not_found'
      | 'facility_closed'
      | 'over_limit'
      | 'not_the_initiator'
      | 'approval_process_expired'
      | 'invalid_price'
      | 'invalid_operator',
    message: string,
  ) {
    super(message);
  }
}
