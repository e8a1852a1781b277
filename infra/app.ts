import { App, Aspects } from 'aws-cdk-lib';
import { AwsSolutionsChecks } from 'cdk-nag';
import { JobsStack } from './jobs-stack.js';
import { stackPropsFromContext } from './settings.js';

/**
 * `npx cdk synth` / `npx cdk deploy`. Environment-agnostic (no account or region, no lookups), so synth
 * runs offline. Settings come from context (infra/settings.ts, docs/deploy.md), e.g.
 * `-c notificationFromAddress=<SES sender> -c priceSourceUrl=<https URL> -c alarmEmail=<ops address>`.
 */
const app = new App();
const read = (key: string): unknown => app.node.tryGetContext(key);
new JobsStack(app, (read('stackName') as string | undefined) ?? 'LanaJobs', stackPropsFromContext(read));
Aspects.of(app).add(new AwsSolutionsChecks({ verbose: true }));
