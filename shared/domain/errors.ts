/**
 * A lending operation refused because of its input (a vote on an unknown or concluded approval process, a
 * second vote by the same member). Nothing was written. The code is machine-readable, the message says why.
 */
export class LendingInputError extends Error {
  override readonly name = 'LendingInputError';
  constructor(
    readonly code: 'approval_process_not_found' | 'approval_process_concluded' | 'already_voted',
    message: string,
  ) {
    super(message);
  }
}
