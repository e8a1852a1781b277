import { App, Aspects } from 'aws-cdk-lib';
import { AwsSolutionsChecks } from 'cdk-nag';
import { JobsStack } from './jobs-stack.js';

/**
 * `npx cdk synth` / `npx cdk deploy`. Environment-agnostic (no account or region, no lookups), so synth
 * runs offline. Settings come from context, e.g. `-c deletionProtection=false -c alarmEmail=ops@example.com`.
 */
const app = new App();

function context(name: string): string | undefined {
  const v: unknown = app.node.tryGetContext(name);
  return v === undefined || v === null || v === '' ? undefined : String(v);
}
function numberContext(name: string): number | undefined {
  const v = context(name);
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0)
    throw new Error(`context ${name} must be a non-negative number (got "${v}")`);
  return n;
}
function booleanContext(name: string): boolean | undefined {
  const v = context(name);
  if (v === undefined) return undefined;
  if (v !== 'true' && v !== 'false') throw new Error(`context ${name} must be true or false (got "${v}")`);
  return v === 'true';
}

new JobsStack(app, context('stackName') ?? 'LanaJobs', {
  description: 'lana-jobs: PostgreSQL-backed background jobs (Aurora Data API, EventBridge, Lambda)',
  deletionProtection: booleanContext('deletionProtection'),
  minCapacity: numberContext('minCapacity'),
  maxCapacity: numberContext('maxCapacity'),
  backupRetentionDays: numberContext('backupRetentionDays'),
  executorReservedConcurrency: numberContext('executorReservedConcurrency'),
  fetchReadyReservedConcurrency: numberContext('fetchReadyReservedConcurrency'),
  claimBatchSize: numberContext('claimBatchSize'),
  maxClaimsPerRun: numberContext('maxClaimsPerRun'),
  alarmEmail: context('alarmEmail'),
  notificationFromAddress: context('notificationFromAddress'),
  priceSourceUrl: context('priceSourceUrl'),
  jobRetentionDays: numberContext('jobRetentionDays'),
});

Aspects.of(app).add(new AwsSolutionsChecks({ verbose: true }));
