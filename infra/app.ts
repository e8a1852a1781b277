import { runApp } from './synth.js';

/**
 * `npx cdk synth` / `npx cdk deploy`. Environment-agnostic (no account or region, no lookups), so synth
 * runs offline. Settings come from context (infra/settings.ts, docs/deploy.md), e.g.
 * `-c notificationFromAddress=<SES sender> -c priceSourceUrl=<https URL> -c alarmEmail=<ops address>`.
 */
process.exitCode = runApp();
