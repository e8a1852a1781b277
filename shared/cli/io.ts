/** Where a command writes: the process's streams, or a test's. Its own module, so commands need not import the CLI's entry. */
export interface CliIo {
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
}
