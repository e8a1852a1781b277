import { readFileSync } from 'node:fs';
import path from 'node:path';
import { App } from 'aws-cdk-lib';
import { PROJECT_ROOT } from '../../infra/bundling.js';
import { JobsStack, type JobsStackProps } from '../../infra/jobs-stack.js';

/** Valid values for the settings a deployment must give (infra/settings.ts). */
export const REQUIRED_SETTINGS = {
  notificationFromAddress: 'no-reply@notifications.lana-bank.io',
  priceSourceUrl: 'https://prices.lana-bank.io/v1/btc-usd',
} as const;

/** The context of cdk.json: the feature flags `cdk synth` runs with, so the tests see the same template. */
export function cdkJsonContext(): Record<string, unknown> {
  const cdkJson = JSON.parse(readFileSync(path.join(PROJECT_ROOT, 'cdk.json'), 'utf8')) as {
    context?: Record<string, unknown>;
  };
  return cdkJson.context ?? {};
}

/** A stack synthesised without running esbuild (bundling has its own test). */
export function synthStack(props: Partial<JobsStackProps> = {}): JobsStack {
  const app = new App({ context: { ...cdkJsonContext(), 'aws:cdk:bundling-stacks': [] } });
  return new JobsStack(app, 'Test', { ...REQUIRED_SETTINGS, ...props });
}
