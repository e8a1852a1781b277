/** Bad console input: shown as a message with status 400, nothing written. */
export class ConsoleInputError extends Error {}
