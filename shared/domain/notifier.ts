import { appendFile, mkdir } from 'node:fs/promises';
import path from 'node:path';
import { SESv2Client, SendEmailCommand } from '@aws-sdk/client-sesv2';

/** An e-mail ready to deliver. `idempotencyKey` identifies the outbox row it comes from. */
export interface OutgoingMessage {
  to: string;
  subject: string;
  body: string;
  idempotencyKey: string;
}

/** Delivers rendered notifications. Locally: a file and the log. On AWS: Amazon SES. */
export interface Notifier {
  send(message: OutgoingMessage, signal?: AbortSignal): Promise<{ messageId: string }>;
}

/** Appends each message as one JSON line to a file (default `.lana-jobs/outbox.jsonl`). */
export function createFileNotifier(
  file = path.resolve('.lana-jobs/outbox.jsonl'),
): Notifier & { file: string } {
  return {
    file,
    async send(message) {
      await mkdir(path.dirname(file), { recursive: true });
      const messageId = `local-${message.idempotencyKey}`;
      await appendFile(file, `${JSON.stringify({ messageId, at: new Date().toISOString(), ...message })}\n`);
      return { messageId };
    },
  };
}

/**
 * Sends through Amazon SES (v2 API). The function's IAM policy allows `ses:SendEmail` on the sender
 * identity only. The outbox key travels as a message tag, so a rare re-send after a crash between SES
 * accepting the message and the outbox being marked is recognisable downstream.
 */
export function createSesNotifier(options: { fromAddress: string; client?: SESv2Client }): Notifier {
  if (!/^[^@\s]+@[^@\s]+$/.test(options.fromAddress)) {
    throw new Error(`SES sender must be an e-mail address, got "${options.fromAddress}"`);
  }
  const client = options.client ?? new SESv2Client({});
  return {
    async send(message, signal) {
      const res = await client.send(
        new SendEmailCommand({
          FromEmailAddress: options.fromAddress,
          Destination: { ToAddresses: [message.to] },
          Content: {
            Simple: {
              Subject: { Data: message.subject, Charset: 'UTF-8' },
              Body: { Text: { Data: message.body, Charset: 'UTF-8' } },
            },
          },
          EmailTags: [
            {
              Name: 'outbox_key',
              Value: message.idempotencyKey.replace(/[^A-Za-z0-9_-]/g, '_').slice(0, 256),
            },
          ],
        }),
        { abortSignal: signal },
      );
      if (!res.MessageId) throw new Error('SES accepted the message but returned no MessageId');
      return { messageId: res.MessageId };
    },
  };
}
