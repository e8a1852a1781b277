import { z } from 'zod';
import { JobTypeRegistry } from '../../shared/jobs/registry.js';

/** Small job types for exercising the core without the lending domain. */
export interface TestServices {
  runs: { type: string; payload: unknown; attempt: number }[];
}

export function createTestRegistry() {
  return new JobTypeRegistry<Record<never, never>, TestServices>()
    .register({
      type: 'noop',
      description: 'does nothing',
      schema: z.object({ n: z.number().int().optional() }),
      execute: async (payload, ctx) => {
        ctx.services.runs.push({ type: 'noop', payload, attempt: ctx.attempt });
        return undefined;
      },
    })
    .register({
      type: 'always-fails',
      description: 'throws every time',
      schema: z.object({ reason: z.string() }),
      execute: async (payload, ctx) => {
        ctx.services.runs.push({ type: 'always-fails', payload, attempt: ctx.attempt });
        throw new Error(payload.reason);
      },
    })
    .register({
      type: 'short-retries',
      description: 'fails, with a custom retry policy',
      schema: z.object({}),
      retry: { maxAttempts: 3, backoffBaseSeconds: 10, backoffCapSeconds: 15 },
      timeoutSeconds: 5,
      execute: async () => {
        throw new Error('nope');
      },
    });
}
